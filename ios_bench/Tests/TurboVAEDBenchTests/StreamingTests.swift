import CoreML
import XCTest
@testable import TurboVAEDBench

/// The streaming loop: manifest `stream` section, chunk plan, arguments, results, and a run of the fixture step.
final class StreamingTests: XCTestCase {
    private func manifestJSON(_ url: URL = Fixtures.tinyStreamManifest) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    }

    private func decode(_ url: URL, _ change: (inout [String: Any]) -> Void) throws -> ArtifactManifest {
        var copy = try manifestJSON(url)
        change(&copy)
        return try ArtifactManifest.decode(JSONSerialization.data(withJSONObject: copy))
    }

    private func decode(_ change: (inout [String: Any]) -> Void) throws -> ArtifactManifest {
        try decode(Fixtures.tinyStreamManifest, change)
    }

    /// A change of the manifest's `stream` section.
    private func stream(_ change: @escaping (inout [String: Any]) -> Void) -> (inout [String: Any]) -> Void {
        { manifest in
            var section = manifest["stream"] as! [String: Any]
            change(&section)
            manifest["stream"] = section
        }
    }

    /// The one-line message of the BenchError `body` throws.
    private func message(_ body: () throws -> Any) -> String {
        do {
            _ = try body()
        } catch let error as BenchError {
            return error.message
        } catch {
            return "not a BenchError: \(error)"
        }
        return "no error"
    }

    private static func spec(k: Int = 2, perLatent: Int = 4, skip: Int = 3) -> StreamSpec {
        StreamSpec(chunkLatentFrames: k, framesPerChunk: k * perLatent, firstChunkSkip: skip, states: [])
    }

    /// A protocol-v2 spec: controls start, remaining, first, trim; a valid output; flush chunks; restarts.
    private static func specV2(k: Int = 2, flush: Int = 1, restartAt: [Int] = [3, 6]) -> StreamSpec {
        StreamSpec(chunkLatentFrames: k, framesPerChunk: k * 4, firstChunkSkip: 0, states: [],
                   controls: ["start", "remaining", "first", "trim"], validOutput: "valid", flushChunks: flush,
                   restartAt: restartAt)
    }

    func testStreamManifestDecodes() throws {
        let manifest = try ArtifactManifest.load(forModel: Fixtures.tinyStreamModel)
        let stream = try XCTUnwrap(manifest.stream)
        XCTAssertTrue(manifest.isStreaming)
        XCTAssertEqual(stream.chunkLatentFrames, 2)
        XCTAssertEqual(stream.framesPerChunk, 8)
        XCTAssertEqual(stream.firstChunkSkip, 3)
        XCTAssertEqual(stream.framesPerLatentFrame, 4)
        XCTAssertEqual(stream.states, [StreamSpec.State(name: "state0", shape: [1, 16, 2, 2], dtype: "float16",
                                                        initial: "zeros", next: "state0_next")])
        XCTAssertEqual(manifest.inputs.map(\.name), ["latents", "first", "trim", "state0"])
        XCTAssertEqual(manifest.outputs.map(\.name), ["frames", "state0_next"])
        // protocol v1: no v2 field in the section, read as the v1 loop
        XCTAssertEqual(stream.controls, ["first", "trim"])
        XCTAssertEqual(stream.controls, StreamSpec.defaultControls)
        XCTAssertNil(stream.validOutput)
        XCTAssertEqual(stream.flushChunks, 0)
        XCTAssertEqual(stream.restartAt, [])
        let nulls = self.stream { section in
            section["controls"] = NSNull()
            section["valid_output"] = NSNull()
            section["flush_chunks"] = NSNull()
            section["restart_at"] = NSNull()
        }
        XCTAssertEqual(try decode(nulls).stream, stream)  // null reads as absent
        XCTAssertNil(try ArtifactManifest.load(forModel: Fixtures.tinyModel).stream)  // whole-chunk artifact
        XCTAssertNoThrow(try decode { $0["stream"] = NSNull() })  // "stream": null reads as whole-chunk
    }

    func testBadStreamSectionsAreErrors() throws {
        XCTAssertNoThrow(try decode { _ in })
        func state(_ key: String, _ value: Any) -> (inout [String: Any]) -> Void {
            stream { section in
                var states = section["states"] as! [[String: Any]]
                states[0][key] = value
                section["states"] = states
            }
        }
        XCTAssertThrowsError(try decode(stream { $0["chunk_latent_frames"] = 3 }))
        XCTAssertThrowsError(try decode(stream { $0["frames_per_chunk"] = 7 }))
        XCTAssertThrowsError(try decode(stream { $0["first_chunk_skip"] = -1 }))
        XCTAssertThrowsError(try decode(state("next", "state9_next")))
        XCTAssertThrowsError(try decode(state("name", "state9")))
        XCTAssertThrowsError(try decode(state("init", "ones")))
        XCTAssertThrowsError(try decode(state("shape", [2, 16, 2, 2])))
        XCTAssertThrowsError(try decode { manifest in
            manifest["inputs"] = (manifest["inputs"] as! [[String: Any]]).filter { ($0["name"] as? String) != "trim" }
        })
        // v2 fields on a v1 section: each refused with one line naming the problem
        let unknown = message { try self.decode(self.stream { $0["controls"] = ["first", "trim", "frame_index"] }) }
        XCTAssertTrue(unknown.contains("'frame_index'") && unknown.contains("stream.controls"), unknown)
        XCTAssertFalse(unknown.contains("\n"))
        XCTAssertTrue(message { try self.decode(self.stream { $0["controls"] = ["first", "first"] }) }
            .contains("twice"))
        XCTAssertTrue(message { try self.decode(self.stream { $0["controls"] = ["first"] }) }
            .contains("input 'trim' is neither"))  // an input nothing feeds
        XCTAssertTrue(message { try self.decode(self.stream { $0["controls"] = ["first", "trim", "start"] }) }
            .contains("needs the input 'start'"))
        XCTAssertTrue(message { try self.decode(self.stream { $0["flush_chunks"] = -1 }) }.contains("flush_chunks"))
        XCTAssertTrue(message { try self.decode(self.stream { $0["flush_chunks"] = 1 }) }.contains("valid_output"))
        let bads: [[Int]] = [[0], [5, 3], [3, 3], [-2]]
        for bad in bads {  // latent indices > 0, strictly increasing
            let text = message { try self.decode(self.stream { $0["restart_at"] = bad }) }
            XCTAssertTrue(text.contains("stream.restart_at") && text.contains("strictly increasing"), text)
        }
        XCTAssertThrowsError(try decode(stream { $0["restart_at"] = 21 }))  // a list, not a number
        XCTAssertThrowsError(try decode(stream { $0["restart_at"] = [2.5] }))
        XCTAssertTrue(message { try self.decode(self.stream { $0["valid_output"] = "valid" }) }
            .contains("stream.valid_output 'valid'"))
        XCTAssertTrue(message { try self.decode(self.stream { $0["valid_output"] = "state0_next" }) }
            .contains("valid_output"))
        XCTAssertThrowsError(try decode(stream { $0["flush_chunks"] = 1.5 }))  // not an int: not a manifest
        XCTAssertThrowsError(try decode(stream { $0["controls"] = "first" }))
        XCTAssertEqual(try decode(stream { $0["restart_at"] = [4] }).stream?.restartAt, [4])
        XCTAssertEqual(try decode(stream { $0["restart_at"] = [] as [Int] }).stream?.restartAt, [])
        XCTAssertTrue(message { try self.decode(self.stream { $0["controls"] = ["first", "trim", "total"] }) }
            .contains("'total'"))  // not a control of the final protocol: remaining keeps fp16 exact
        XCTAssertThrowsError(try decode { manifest in  // a control input must be [1, 1, 1, 1]
            var inputs = manifest["inputs"] as! [[String: Any]]
            inputs[1]["shape"] = [1, 1, 1, 2]
            manifest["inputs"] = inputs
        })
    }

    func testV2ManifestDecodes() throws {
        let manifest = try ArtifactManifest.load(forModel: Fixtures.tinyStreamV2Model)
        let section = try XCTUnwrap(manifest.stream)
        XCTAssertEqual(section.controls, ["first", "start", "remaining"])
        XCTAssertEqual(section.validOutput, "valid")
        XCTAssertEqual(section.flushChunks, 1)
        XCTAssertEqual(section.restartAt, [])
        XCTAssertEqual(manifest.inputs.map(\.name), ["latents", "first", "start", "remaining", "state0"])
        XCTAssertEqual(manifest.outputs.map(\.name), ["frames", "valid", "state0_next"])
        XCTAssertEqual(manifest.outputs[1].shape, [8, 1, 1, 1])
        XCTAssertNil(try StreamPlan(spec: section, clipLatentFrames: 5, trim: true).totalFrames)  // valid decides
        XCTAssertEqual(StreamSpec.knownControls, ["first", "trim", "start", "remaining"])
        let v2 = Fixtures.tinyStreamV2Manifest
        XCTAssertEqual(try decode(v2, stream { $0["restart_at"] = [3] }).stream?.restartAt, [3])
        XCTAssertTrue(message { try self.decode(v2) { manifest in
            var outputs = manifest["outputs"] as! [[String: Any]]
            outputs[1]["shape"] = [7, 1, 1, 1]
            manifest["outputs"] = outputs
        } }.contains("[8, 1, 1, 1]"))
        XCTAssertTrue(message { try self.decode(v2, self.stream { $0["valid_output"] = "frames" }) }
            .contains("valid_output"))
        XCTAssertTrue(message { try self.decode(v2, self.stream { $0["controls"] = ["first", "start", "count"] }) }
            .contains("'count'"))
        XCTAssertTrue(message { try self.decode(v2, self.stream { $0.removeValue(forKey: "controls") }) }
            .contains("needs the input 'trim'"))  // absent controls mean first, trim
        XCTAssertNoThrow(try decode(v2, stream { $0["flush_chunks"] = 0 }))
    }

    func testPlanIsRunStream() throws {
        // wan-like: 4 frames per latent frame, 3 dropped from a trimming first chunk -> 1 + 4 (T - 1) frames
        for clip in [1, 2, 5, 16, 21] {
            for k in [1, 2, 3] {
                let plan = try StreamPlan(spec: Self.spec(k: k), clipLatentFrames: clip, trim: true)
                XCTAssertEqual(plan.totalFrames, 1 + 4 * (clip - 1), "T=\(clip) k=\(k)")
                XCTAssertEqual(plan.chunks.compactMap(\.keptFrames).reduce(0, +), plan.totalFrames)
                XCTAssertEqual(plan.chunks.count, (clip + k - 1) / k)
                XCTAssertEqual(plan.segments, [0..<clip])
            }
        }
        let plan = try StreamPlan(spec: Self.spec(), clipLatentFrames: 21, trim: true)
        let chunks = plan.chunks
        XCTAssertEqual(chunks.count, 11)
        XCTAssertEqual(chunks[0], StreamChunk(index: 0, start: 0, latentFrames: 2, first: true, trim: true,
                                              keptFrames: 5, segmentLatentFrames: 21, segmentOffset: 0))
        XCTAssertEqual(chunks[1], StreamChunk(index: 1, start: 2, latentFrames: 2, first: false, trim: false,
                                              keptFrames: 8, segmentLatentFrames: 21, segmentOffset: 2))
        XCTAssertEqual(chunks[10], StreamChunk(index: 10, start: 20, latentFrames: 1, first: false, trim: false,
                                               keptFrames: 4, segmentLatentFrames: 21, segmentOffset: 20))
        XCTAssertEqual(chunks[0].controlValue("first"), 1)
        XCTAssertEqual(chunks[0].controlValue("trim"), 1)
        XCTAssertEqual(chunks[1].controlValue("first"), 0)
        XCTAssertEqual(chunks[1].controlValue("trim"), 0)
        XCTAssertNil(chunks[1].controlValue("frame_index"))
        XCTAssertFalse(chunks.contains(where: \.flush))
        XCTAssertEqual([0, 1].map { plan.sourceFrame(chunks[10], slot: $0) }, [20, 20])  // padded with its last frame
        XCTAssertEqual([0, 1].map { plan.sourceFrame(chunks[1], slot: $0) }, [2, 3])
        // no trim (cogvideox, even T): rt * T frames, nothing dropped
        let even = try StreamPlan(spec: Self.spec(), clipLatentFrames: 16, trim: false)
        XCTAssertEqual(even.totalFrames, 64)
        XCTAssertFalse(even.chunks[0].trim)
        XCTAssertTrue(even.chunks[0].first)
        XCTAssertThrowsError(try StreamPlan(spec: Self.spec(), clipLatentFrames: 0, trim: true))
    }

    func testV2PlanSegmentsControlsAndFlush() throws {
        // 8 latent frames restarting at 3 and 6: [0, 3), [3, 6), [6, 8); each: its chunks of 2, then one flush chunk
        let plan = try StreamPlan(spec: Self.specV2(), clipLatentFrames: 8, trim: true)
        XCTAssertEqual(plan.segments, [0..<3, 3..<6, 6..<8])
        let chunks = plan.chunks
        XCTAssertEqual(chunks.map(\.index), Array(0..<8))
        XCTAssertEqual(chunks.map(\.segment), [0, 0, 0, 1, 1, 1, 2, 2])
        XCTAssertEqual(chunks.map(\.flush), [false, false, true, false, false, true, false, true])
        XCTAssertEqual(chunks.map(\.start), [0, 2, 2, 3, 5, 5, 6, 6])  // a flush chunk feeds the last chunk again
        XCTAssertEqual(chunks.map(\.latentFrames), [2, 1, 1, 2, 1, 1, 2, 2])
        XCTAssertEqual(chunks.map { $0.controlValue("start") }, [0, 2, 4, 0, 2, 4, 0, 2])  // within the segment
        XCTAssertNil(chunks[0].controlValue("total"))  // not a control: remaining is
        XCTAssertEqual(chunks.map { $0.controlValue("remaining") }, [3, 1, -1, 3, 1, -1, 2, 0])
        XCTAssertEqual(chunks.map { $0.controlValue("first") }, [1, 0, 0, 1, 0, 0, 1, 0])  // each segment starts over
        XCTAssertEqual(chunks.map { $0.controlValue("trim") }, [1, 0, 0, 1, 0, 0, 1, 0])
        XCTAssertTrue(chunks.allSatisfy { $0.keptFrames == nil })  // the valid output decides
        XCTAssertNil(plan.totalFrames)
        XCTAssertEqual([0, 1].map { plan.sourceFrame(chunks[2], slot: $0) }, [2, 2])  // padded, as its real chunk
        XCTAssertEqual([0, 1].map { plan.sourceFrame(chunks[4], slot: $0) }, [5, 5])
        // no restart: one segment; no flush
        let one = try StreamPlan(spec: Self.specV2(flush: 0, restartAt: []), clipLatentFrames: 5, trim: false)
        XCTAssertEqual(one.segments, [0..<5])
        XCTAssertEqual(one.chunks.map { $0.controlValue("start") }, [0, 2, 4])
        XCTAssertEqual(one.chunks.map { $0.controlValue("trim") }, [0, 0, 0])
        // restart indices at or past the clip's end: no cut there
        XCTAssertEqual(try StreamPlan(spec: Self.specV2(restartAt: [5, 50]), clipLatentFrames: 5, trim: true).segments,
                       [0..<5])
        // cut at the listed indices only, not periodically: [21] and 45 latent frames -> [0, 21), [21, 45)
        let once = try StreamPlan(spec: Self.specV2(restartAt: [21]), clipLatentFrames: 45, trim: true)
        XCTAssertEqual(once.segments, [0..<21, 21..<45])
        XCTAssertEqual(once.chunks.filter(\.first).map(\.start), [0, 21])
        XCTAssertEqual(once.chunks.filter { !$0.flush }.compactMap { $0.controlValue("remaining") }.last, 2)  // 24 - 22
        // one trim flag per segment, or one for all; another count is an error
        let mixed = try StreamPlan(spec: Self.specV2(restartAt: [21]), clipLatentFrames: 45, trims: [false, true])
        XCTAssertEqual(mixed.chunks.filter(\.first).map { $0.controlValue("trim") }, [0, 1])
        XCTAssertTrue(message { try StreamPlan(spec: Self.specV2(restartAt: [21]), clipLatentFrames: 45,
                                               trims: [true, true, true]) }.contains("one per segment"))
        XCTAssertThrowsError(try StreamPlan(spec: Self.specV2(restartAt: [21]), clipLatentFrames: 45, trims: []))
        // the v1 frame rule per segment: segments of 8, 8 and 5 latent frames, each trimmed -> 29 + 29 + 17
        let v1 = StreamSpec(chunkLatentFrames: 2, framesPerChunk: 8, firstChunkSkip: 3, states: [], restartAt: [8, 16])
        let restarted = try StreamPlan(spec: v1, clipLatentFrames: 21, trim: true)
        XCTAssertEqual(restarted.totalFrames, 29 + 29 + 17)
        XCTAssertEqual(restarted.chunks.compactMap(\.keptFrames).reduce(0, +), restarted.totalFrames)
        XCTAssertEqual(restarted.chunks.filter(\.first).map(\.start), [0, 8, 16])
        XCTAssertEqual(restarted.chunks.filter(\.first).map(\.keptFrames), [5, 5, 5])
        // segments whose own rules differ (cogvideox: 5 latent frames trim, 8 do not): one flag each
        let cog = try StreamPlan(spec: v1, clipLatentFrames: 21, trims: [false, false, true])
        XCTAssertEqual(cog.totalFrames, 32 + 32 + 17)
        XCTAssertEqual(cog.chunks.filter(\.first).map(\.trim), [false, false, true])
        let odd = try StreamPlan(spec: v1, clipLatentFrames: 21, trims: [true, false, false])
        XCTAssertEqual(odd.totalFrames, 29 + 32 + 20)
    }

    func testStreamArguments() throws {
        let parsed = try XCTUnwrap(BenchArguments.parse(["-model", "m.mlpackage", "-streamFrames", "16", "-trim", "NO"]))
        XCTAssertEqual(parsed.streamFrames, 16)
        XCTAssertEqual(parsed.trims, [false])
        XCTAssertEqual(try XCTUnwrap(BenchArguments.parse(["-model", "m", "-stream-frames", "5"])).streamFrames, 5)
        let defaults = try XCTUnwrap(BenchArguments.parse(["-model", "m"]))
        XCTAssertNil(defaults.streamFrames)
        XCTAssertEqual(defaults.trims, [true])
        XCTAssertThrowsError(try BenchArguments.parse(["-model", "m", "-streamFrames", "0"]))
        XCTAssertThrowsError(try BenchArguments.parse(["-model", "m", "-trim", "sometimes"]))
        // one value per segment (restart_at), comma-separated
        let segments = try XCTUnwrap(BenchArguments.parse(["-model", "m", "-streamFrames", "21", "-trim", "NO,NO,YES"]))
        XCTAssertEqual(segments.trims, [false, false, true])
        XCTAssertThrowsError(try BenchArguments.parse(["-model", "m", "-trim", "YES,maybe"]))
        XCTAssertThrowsError(try BenchArguments.parse(["-model", "m", "-trim", "YES,"]))
    }

    func testClipLatentFrames() throws {
        XCTAssertEqual(try Latents.clipLatentFrames(.random(seed: 0), requested: nil), 21)
        XCTAssertEqual(try Latents.clipLatentFrames(.random(seed: 0), requested: 7), 7)
        XCTAssertThrowsError(try Latents.clipLatentFrames(.file(URL(fileURLWithPath: "/x/z.bin")), requested: nil))
        let clip = try Latents.makeClip(.random(seed: 3), latentFrames: 5, frameShape: [16, 2, 2])
        XCTAssertEqual(clip.count, 5 * 16 * 2 * 2)
    }

    func testStreamResultEncodesTheSchemaKeys() throws {
        var result = ResultsEncodingTests.sampleResult()
        result.stream = StreamSummary(
            chunkLatentFrames: 2, latentFrames: 21, frames: 81, firstChunkMs: 40.25,
            steadyChunkMs: ChunkLatencySummary(min: 10, p50: 12, p90: 14, max: 15, mean: 12.5), sustainedFps: 610.5
        )
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: ResultsIO.encode(
            BenchDocument(created: "2025-01-01T00:00:00Z", results: [result]))) as? [String: Any])
        let encoded = try XCTUnwrap((json["results"] as? [[String: Any]])?.first)
        let stream = try XCTUnwrap(encoded["stream"] as? [String: Any])
        XCTAssertEqual(Set(stream.keys), ["chunk_latent_frames", "latent_frames", "frames", "first_chunk_ms",
                                          "steady_chunk_ms", "sustained_fps"])
        XCTAssertEqual(Set(try XCTUnwrap(stream["steady_chunk_ms"] as? [String: Any]).keys),
                       ["min", "p50", "p90", "max", "mean"])
        XCTAssertEqual(stream["frames"] as? Int, 81)
        let plain = try XCTUnwrap(JSONSerialization.jsonObject(with: ResultsIO.encode(
            BenchDocument(created: "x", results: [ResultsEncodingTests.sampleResult()]))) as? [String: Any])
        let plainResult = try XCTUnwrap((plain["results"] as? [[String: Any]])?.first)
        XCTAssertNil(plainResult["stream"])  // whole-chunk results leave the key out
    }

    func testSampleStreamResultsRoundTrip() throws {
        let data = try Data(contentsOf: Fixtures.sampleStreamResults)
        let document = try ResultsIO.decode(data)
        let result = try XCTUnwrap(document.results.first)
        let stream = try XCTUnwrap(result.stream)
        XCTAssertEqual(stream.frames, result.model.outputFrames)
        XCTAssertEqual(stream.latentFrames, result.model.latentShape[2])
        XCTAssertEqual(result.latencyMs.samples?.count, result.settings.iterations)
        let original = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? NSDictionary)
        let again = try XCTUnwrap(JSONSerialization.jsonObject(with: ResultsIO.encode(document)) as? NSDictionary)
        XCTAssertEqual(original, again)
    }

    func testFeederPadsAndCarriesState() throws {
        let manifest = try ArtifactManifest.load(forModel: Fixtures.tinyStreamModel)
        let compiled = try MLModel.compileModel(at: Fixtures.tinyStreamModel)
        defer { try? FileManager.default.removeItem(at: compiled) }
        let loaded = try MLModel(contentsOf: compiled)
        let io = try StreamIO(model: loaded, manifest: manifest)
        XCTAssertEqual(io.latentsName, "latents")
        XCTAssertEqual(io.framesName, "frames")
        XCTAssertEqual(io.inputTypes["state0"], .float16)
        let plan = try StreamPlan(spec: try XCTUnwrap(manifest.stream), clipLatentFrames: 3, trim: true)
        let clip = (0..<(3 * 64)).map { Float($0 / 64) }  // latent frame f holds the value f
        let feeder = try StreamFeeder(io: io, plan: plan, clip: clip, chunkShape: manifest.inputShape)
        let last = try XCTUnwrap(plan.chunks.last)
        let features = try feeder.features(for: last)
        let latents = try XCTUnwrap(features.featureValue(for: "latents")?.multiArrayValue)
        XCTAssertEqual(latents[0].floatValue, 2)  // the short last chunk holds frame 2 ...
        XCTAssertEqual(latents[64].floatValue, 2)  // ... padded with a copy of it
        XCTAssertEqual(features.featureValue(for: "first")?.multiArrayValue?[0].floatValue, 0)
        XCTAssertEqual(features.featureValue(for: "state0")?.multiArrayValue?[0].floatValue, 0)  // zeros at first
        let first = try feeder.features(for: plan.chunks[0])
        XCTAssertEqual(first.featureValue(for: "first")?.multiArrayValue?[0].floatValue, 1)
        XCTAssertEqual(first.featureValue(for: "trim")?.multiArrayValue?[0].floatValue, 1)
        let frames = try feeder.carry(try loaded.prediction(from: first))
        XCTAssertEqual(frames.shape.map(\.intValue), [8, 3, 16, 16])
        // the fixture's state output is its chunk's last latent frame (1): fed back as the next state input
        XCTAssertEqual(feeder.states["state0"]?[0].floatValue, 1)
        feeder.reset()
        XCTAssertEqual(feeder.states["state0"]?[0].floatValue, 0)
        // v1: the chunk's planned count, whatever the prediction
        XCTAssertEqual(try feeder.keptFrames(try loaded.prediction(from: first), chunk: plan.chunks[0]), 5)
        XCTAssertNil(io.validName)
    }

    /// Runs the v2 fixture over a clip as BenchmarkRunner does; returns (predictions, kept frames).
    private func streamV2(clip: Int, restartAt: [Int]) throws -> (Int, Int) {
        let manifest = try ArtifactManifest.load(forModel: Fixtures.tinyStreamV2Model)
        let compiled = try MLModel.compileModel(at: Fixtures.tinyStreamV2Model)
        defer { try? FileManager.default.removeItem(at: compiled) }
        let loaded = try MLModel(contentsOf: compiled)
        let io = try StreamIO(model: loaded, manifest: manifest)
        let base = try XCTUnwrap(manifest.stream)
        let spec = StreamSpec(chunkLatentFrames: base.chunkLatentFrames, framesPerChunk: base.framesPerChunk,
                              firstChunkSkip: base.firstChunkSkip, states: base.states, controls: base.controls,
                              validOutput: base.validOutput, flushChunks: base.flushChunks,
                              restartAt: restartAt)
        let plan = try StreamPlan(spec: spec, clipLatentFrames: clip, trim: true)
        let values = Latents.randomNormal(count: clip * 64, seed: 2)
        let feeder = try StreamFeeder(io: io, plan: plan, clip: values, chunkShape: manifest.inputShape)
        var kept = 0
        for chunk in plan.chunks {
            let features = try feeder.features(for: chunk)
            XCTAssertNil(features.featureValue(for: "trim"))  // not a control of this step
            XCTAssertEqual(features.featureValue(for: "start")?.multiArrayValue?[0].floatValue,
                           Float(chunk.segmentOffset))
            XCTAssertEqual(features.featureValue(for: "remaining")?.multiArrayValue?[0].floatValue,
                           Float(chunk.segmentLatentFrames - chunk.segmentOffset))  // <= 0 on a flush chunk
            XCTAssertNil(features.featureValue(for: "total"))
            if chunk.first {  // every segment starts from zero states
                XCTAssertEqual(features.featureValue(for: "state0")?.multiArrayValue?[0].floatValue, 0)
            }
            let output = try loaded.prediction(from: features)
            try feeder.carry(output)
            kept += try feeder.keptFrames(output, chunk: chunk)
        }
        return (plan.chunks.count, kept)
    }

    func testFeederV2ValidRowsFlushAndRestart() throws {
        let manifest = try ArtifactManifest.load(forModel: Fixtures.tinyStreamV2Model)
        let compiled = try MLModel.compileModel(at: Fixtures.tinyStreamV2Model)
        defer { try? FileManager.default.removeItem(at: compiled) }
        let io = try StreamIO(model: try MLModel(contentsOf: compiled), manifest: manifest)
        XCTAssertEqual(io.validName, "valid")
        // a segment of L latent frames: 1 + 4 (L - 1) frames, the last ones from the flush chunk
        XCTAssertEqual(try streamV2(clip: 5, restartAt: []).1, 17)
        XCTAssertEqual(try streamV2(clip: 5, restartAt: []).0, 3 + 1)
        XCTAssertEqual(try streamV2(clip: 4, restartAt: []).1, 13)  // the flush chunk holds latent frame 3
        XCTAssertEqual(try streamV2(clip: 1, restartAt: []).1, 1)
        // restart at 3: segments of 3 and 2, (1 + 8) + (1 + 4), start/remaining per segment, states reset
        let restarted = try streamV2(clip: 5, restartAt: [3])
        XCTAssertEqual(restarted.0, (2 + 1) + (1 + 1))
        XCTAssertEqual(restarted.1, 9 + 5)
        let mask = try Latents.makeMultiArray([1, 0, 0.75, 0.5, 0.25, 1, 1, 0], shape: [8, 1, 1, 1],
                                              dataType: .float16)
        XCTAssertEqual(try StreamFeeder.validRows(mask, rows: 8), [true, false, true, false, false, true, true, false])
        XCTAssertThrowsError(try StreamFeeder.validRows(mask, rows: 5))
    }

    func testStreamingRunEndToEnd() async throws {
        let configuration = BenchConfiguration(modelURL: Fixtures.tinyStreamModel, computeUnits: [.cpuOnly],
                                               latents: .random(seed: 1), computePlan: false, streamFrames: 5)
        let log = ProgressLog()
        let document = try await BenchmarkRunner(configuration: configuration).run { log.append($0) }
        let result = try XCTUnwrap(document.results.first)
        let stream = try XCTUnwrap(result.stream)
        XCTAssertEqual(result.label, "student/coreml-cpuOnly-stream")
        XCTAssertEqual(stream.chunkLatentFrames, 2)
        XCTAssertEqual(stream.latentFrames, 5)
        XCTAssertEqual(stream.frames, 17)  // (8 - 3) + 8 + 4
        XCTAssertEqual(result.model.outputFrames, 17)
        XCTAssertEqual(result.model.latentShape, [1, 16, 5, 2, 2])
        XCTAssertEqual(result.settings, BenchSettings(warmup: 0, iterations: 2))  // chunks after the first
        XCTAssertEqual(result.latencyMs.samples?.count, 2)
        XCTAssertEqual(result.coldStart.firstRunMs, stream.firstChunkMs)
        XCTAssertEqual(stream.steadyChunkMs, ChunkLatencySummary(result.latencyMs))
        XCTAssertGreaterThan(stream.sustainedFps, 0)
        XCTAssertEqual(result.fps, 8 / (result.latencyMs.p50 / 1000), accuracy: 1e-6)
        XCTAssertGreaterThan(try XCTUnwrap(result.peakMemoryBytes), 0)
        XCTAssertTrue(result.notes?.contains("streamed 5 latent frames in 3 chunks of 2") ?? false)
        XCTAssertFalse(result.notes?.contains("not finite") ?? true)
        XCTAssertEqual(log.all.compactMap(\.streamedFrames).last, 17)
        XCTAssertTrue(Set(log.all.map(\.phase)).isSuperset(of: [.loading, .streaming, .done]))
        XCTAssertEqual(try ResultsIO.decode(ResultsIO.encode(document)), document)
    }

    func testStreamingRunEndToEndV2() async throws {
        let configuration = BenchConfiguration(modelURL: Fixtures.tinyStreamV2Model, computeUnits: [.cpuOnly],
                                               latents: .random(seed: 1), computePlan: false, streamFrames: 5)
        let log = ProgressLog()
        let document = try await BenchmarkRunner(configuration: configuration).run { log.append($0) }
        let result = try XCTUnwrap(document.results.first)
        let summary = try XCTUnwrap(result.stream)
        XCTAssertEqual(summary.frames, 17)  // the valid rows: 1 + 4 * 4
        XCTAssertEqual(result.model.outputFrames, 17)
        XCTAssertEqual(result.settings, BenchSettings(warmup: 0, iterations: 3))  // 3 chunks + 1 flush, after the first
        XCTAssertEqual(log.all.compactMap(\.streamedFrames).last, 17)
        let notes = try XCTUnwrap(result.notes)
        XCTAssertTrue(notes.contains("streamed 5 latent frames in 4 chunks of 2"), notes)
        XCTAssertTrue(notes.contains("frames kept where 'valid' > 0.5"), notes)
        XCTAssertTrue(notes.contains("1 flush chunk after each segment"), notes)

        // the same step restarting at latent frame 3 (a copy with its manifest changed)
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let model = directory.appendingPathComponent("tiny-stream-v2.mlpackage")
        try FileManager.default.copyItem(at: Fixtures.tinyStreamV2Model, to: model)
        var json = try manifestJSON(Fixtures.tinyStreamV2Manifest)
        let restart = stream { $0["restart_at"] = [3] }
        restart(&json)
        try JSONSerialization.data(withJSONObject: json).write(to: ArtifactManifest.url(forModel: model))
        var restarted = configuration
        restarted.modelURL = model
        let again = try await BenchmarkRunner(configuration: restarted).run()
        let segmented = try XCTUnwrap(again.results.first?.stream)
        XCTAssertEqual(segmented.frames, 9 + 5)
        XCTAssertEqual(again.results.first?.settings.iterations, 5 - 1)
        XCTAssertTrue(again.results.first?.notes?.contains("2 segments (restart_at 3; states reset at each)") ?? false)
    }

    func testWholeChunkArtifactRefusesStreamFrames() async throws {
        let configuration = BenchConfiguration(modelURL: Fixtures.tinyModel, computeUnits: [.cpuOnly],
                                               computePlan: false, streamFrames: 5)
        do {
            _ = try await BenchmarkRunner(configuration: configuration).run()
            XCTFail("a whole-chunk artifact cannot stream")
        } catch let error as BenchError {
            XCTAssertTrue(error.message.contains("export --stream"))
        }
    }
}
