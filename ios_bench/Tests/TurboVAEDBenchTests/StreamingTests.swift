import CoreML
import XCTest
@testable import TurboVAEDBench

/// The streaming loop: manifest `stream` section, chunk plan, arguments, results, and a run of the fixture step.
final class StreamingTests: XCTestCase {
    private func manifestJSON() throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.tinyStreamManifest)) as? [String: Any])
    }

    private func decode(_ change: (inout [String: Any]) -> Void) throws -> ArtifactManifest {
        var copy = try manifestJSON()
        change(&copy)
        return try ArtifactManifest.decode(JSONSerialization.data(withJSONObject: copy))
    }

    private static func spec(k: Int = 2, perLatent: Int = 4, skip: Int = 3) -> StreamSpec {
        StreamSpec(chunkLatentFrames: k, framesPerChunk: k * perLatent, firstChunkSkip: skip, states: [])
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
        XCTAssertNil(try ArtifactManifest.load(forModel: Fixtures.tinyModel).stream)  // whole-chunk artifact
        XCTAssertNoThrow(try decode { $0["stream"] = NSNull() })  // "stream": null reads as whole-chunk
    }

    func testBadStreamSectionsAreErrors() throws {
        XCTAssertNoThrow(try decode { _ in })
        func stream(_ change: @escaping (inout [String: Any]) -> Void) -> (inout [String: Any]) -> Void {
            { manifest in
                var section = manifest["stream"] as! [String: Any]
                change(&section)
                manifest["stream"] = section
            }
        }
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
    }

    func testPlanIsRunStream() throws {
        // wan-like: 4 frames per latent frame, 3 dropped from a trimming first chunk -> 1 + 4 (T - 1) frames
        for clip in [1, 2, 5, 16, 21] {
            for k in [1, 2, 3] {
                let plan = try StreamPlan(spec: Self.spec(k: k), clipLatentFrames: clip, trim: true)
                XCTAssertEqual(plan.totalFrames, 1 + 4 * (clip - 1), "T=\(clip) k=\(k)")
                XCTAssertEqual(plan.chunks.map(\.keptFrames).reduce(0, +), plan.totalFrames)
                XCTAssertEqual(plan.chunks.count, (clip + k - 1) / k)
            }
        }
        let plan = try StreamPlan(spec: Self.spec(), clipLatentFrames: 21, trim: true)
        let chunks = plan.chunks
        XCTAssertEqual(chunks.count, 11)
        XCTAssertEqual(chunks[0], StreamChunk(index: 0, start: 0, latentFrames: 2, first: true, trim: true,
                                              keptFrames: 5))
        XCTAssertEqual(chunks[1], StreamChunk(index: 1, start: 2, latentFrames: 2, first: false, trim: false,
                                              keptFrames: 8))
        XCTAssertEqual(chunks[10], StreamChunk(index: 10, start: 20, latentFrames: 1, first: false, trim: false,
                                               keptFrames: 4))
        XCTAssertEqual([0, 1].map { plan.sourceFrame(chunks[10], slot: $0) }, [20, 20])  // padded with its last frame
        XCTAssertEqual([0, 1].map { plan.sourceFrame(chunks[1], slot: $0) }, [2, 3])
        // no trim (cogvideox, even T): rt * T frames, nothing dropped
        let even = try StreamPlan(spec: Self.spec(), clipLatentFrames: 16, trim: false)
        XCTAssertEqual(even.totalFrames, 64)
        XCTAssertFalse(even.chunks[0].trim)
        XCTAssertTrue(even.chunks[0].first)
        XCTAssertThrowsError(try StreamPlan(spec: Self.spec(), clipLatentFrames: 0, trim: true))
    }

    func testStreamArguments() throws {
        let parsed = try XCTUnwrap(BenchArguments.parse(["-model", "m.mlpackage", "-streamFrames", "16", "-trim", "NO"]))
        XCTAssertEqual(parsed.streamFrames, 16)
        XCTAssertFalse(parsed.trim)
        XCTAssertEqual(try XCTUnwrap(BenchArguments.parse(["-model", "m", "-stream-frames", "5"])).streamFrames, 5)
        let defaults = try XCTUnwrap(BenchArguments.parse(["-model", "m"]))
        XCTAssertNil(defaults.streamFrames)
        XCTAssertTrue(defaults.trim)
        XCTAssertThrowsError(try BenchArguments.parse(["-model", "m", "-streamFrames", "0"]))
        XCTAssertThrowsError(try BenchArguments.parse(["-model", "m", "-trim", "sometimes"]))
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
