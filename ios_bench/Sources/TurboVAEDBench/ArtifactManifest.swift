import Foundation

/// The fields of `<name>.manifest.json` (turbovaed.manifest/2, or /1) that the benchmark needs.
///
/// `turbovaed export` writes the manifest next to the artifact: `wan-256p.mlpackage` ->
/// `wan-256p.manifest.json`. A compiled `wan-256p.mlmodelc` uses the same name. An artifact exported with
/// `turbovaed export --stream` also has a `stream` section (see `StreamSpec`): the app then runs the
/// streaming loop, carrying the state tensors from one prediction to the next.
public struct ArtifactManifest: Decodable, Equatable, Sendable {
    /// One graph input or output: name, shape, dtype.
    public struct Tensor: Decodable, Equatable, Sendable {
        public let name: String
        public let shape: [Int]
        public let dtype: String?

        enum CodingKeys: String, CodingKey {
            case name = "name"
            case shape = "shape"
            case dtype = "dtype"
        }
    }

    public let schema: String?
    public let name: String?
    public let artifact: String?
    public let target: String?
    public let preset: String?
    public let family: String
    public let width: Int
    public let height: Int
    public let latentFrames: Int?
    public let outputFrames: Int?
    public let precision: String?
    public let inputs: [Tensor]
    public let outputs: [Tensor]
    public let sizeBytes: Int?
    public let sha256: String?
    /// Present for streaming artifacts (`turbovaed export --stream`), nil for whole-chunk ones.
    public let stream: StreamSpec?

    enum CodingKeys: String, CodingKey {
        case schema = "schema"
        case name = "name"
        case artifact = "artifact"
        case target = "target"
        case preset = "preset"
        case family = "family"
        case width = "width"
        case height = "height"
        case latentFrames = "latent_frames"
        case outputFrames = "output_frames"
        case precision = "precision"
        case inputs = "inputs"
        case outputs = "outputs"
        case sizeBytes = "size_bytes"
        case sha256 = "sha256"
        case stream = "stream"
    }

    /// `<dir>/<stem>.manifest.json` for `<dir>/<stem>.mlpackage` or `<dir>/<stem>.mlmodelc`.
    public static func url(forModel modelURL: URL) -> URL {
        let stem = modelURL.deletingPathExtension().lastPathComponent
        return modelURL.deletingLastPathComponent().appendingPathComponent("\(stem).manifest.json")
    }

    /// Read and check the manifest that belongs to `modelURL`.
    public static func load(forModel modelURL: URL) throws -> ArtifactManifest {
        let manifestURL = Self.url(forModel: modelURL)
        guard FileManager.default.fileExists(atPath: manifestURL.path) else {
            throw BenchError("manifest not found: \(manifestURL.lastPathComponent) must sit next to "
                + "\(modelURL.lastPathComponent) (turbovaed export writes both; copy them together)")
        }
        return try decode(Data(contentsOf: manifestURL), source: manifestURL.lastPathComponent)
    }

    /// Decode and check manifest JSON.
    public static func decode(_ data: Data, source: String = "manifest") throws -> ArtifactManifest {
        let manifest: ArtifactManifest
        do {
            manifest = try JSONDecoder().decode(ArtifactManifest.self, from: data)
        } catch {
            throw BenchError("\(source) is not a turbovaed manifest (\(error)); export the artifact again")
        }
        try manifest.check(source: source)
        return manifest
    }

    /// Shape checks: latents [T, C, h, w] and frames [F, 3, H, W] with H, W the manifest's pixel size.
    public func check(source: String = "manifest") throws {
        // no family list here: the manifest's shapes say everything the app needs (a new family is data only)
        guard !family.isEmpty else {
            throw BenchError("\(source): family is empty")
        }
        guard let input = inputs.first, input.shape.count == 4, input.shape.allSatisfy({ $0 > 0 }) else {
            throw BenchError("\(source): inputs[0].shape must be [T, C, h, w] with positive sizes")
        }
        guard let output = outputs.first, output.shape.count == 4, output.shape[1] == 3 else {
            throw BenchError("\(source): outputs[0].shape must be [F, 3, H, W]")
        }
        guard output.shape[2] == height, output.shape[3] == width else {
            throw BenchError("\(source): outputs[0].shape \(output.shape) does not match \(width)x\(height)")
        }
        if let stream {
            try stream.check(inputs: inputs, outputs: outputs, source: source)
        }
    }

    /// True for a streaming step (`turbovaed export --stream`).
    public var isStreaming: Bool { stream != nil }

    /// Latent input [T, C, h, w].
    public var inputShape: [Int] { inputs[0].shape }
    /// Decoded frames [F, 3, H, W].
    public var outputShape: [Int] { outputs[0].shape }
    public var inputName: String { inputs[0].name }
    public var outputName: String { outputs[0].name }
    /// Output frames per decode: F.
    public var framesPerDecode: Int { outputFrames ?? outputShape[0] }

    /// The schema's `latent_shape`: [1, C, T, h, w] (PyTorch batch, channels, frames, height, width).
    public var latentShape5D: [Int] {
        let s = inputShape
        return [1, s[1], s[0], s[2], s[3]]
    }

    /// `sha256` when it is a 64-digit lowercase hex digest, else nil.
    public var validSha256: String? {
        let hex = Set("0123456789abcdef")
        guard let sha256, sha256.count == 64, sha256.allSatisfy({ hex.contains($0) }) else { return nil }
        return sha256
    }
}

/// The manifest's `stream` section: how to carry a streaming step's state from one chunk to the next.
///
/// The loop (what turbo_vaed/streaming.py `run_stream` does): every state starts as zeros; chunk i of a clip
/// of T latent frames feeds `latents` [k, C, h, w] (a short last chunk padded with copies of its last latent
/// frame), the control inputs, and every state; it keeps rows of `frames` and feeds each state's `next` output
/// back as that state.
///
/// Protocol v1 (no `controls`, `valid_output`, `flush_chunks`, `restart_at`): the controls are `first` = 1
/// only for i == 0 and `trim` = `first` when the full decode of the clip trims; the loop keeps the first
/// n * frames_per_chunk / k frames of a short last chunk, minus the first `first_chunk_skip` frames of the first
/// chunk when trim = 1.
///
/// Protocol v2 (optional fields, each absent or null = v1):
/// - `controls`: the control inputs ([1, 1, 1, 1]) in order, from `first`, `trim` (as v1, per segment), `start`
///   (latent index, within the segment, of the chunk's first latent frame: chunk index * k) and `remaining`
///   (latent frames of the segment minus start: <= 0 on flush chunks); default ["first", "trim"];
/// - `valid_output`: an output [frames_per_chunk, 1, 1, 1] (after `frames`): the loop keeps exactly the rows of
///   `frames` whose value is > 0.5, in order (first_chunk_skip and the short-last-chunk rule do not apply);
/// - `flush_chunks`: after the last real chunk of a segment, this many more predictions of the same latents
///   (`start` still advancing by k), keeping their valid rows (the decoder's output lags); needs `valid_output`;
/// - `restart_at`: latent-frame indices (> 0, strictly increasing) at which the video restarts: the clip is cut
///   at every index below its length into segments decoded as videos of their own (every state back to its
///   initial value, first/trim/start/remaining counted within the segment); [] = one segment.
public struct StreamSpec: Decodable, Equatable, Sendable {
    /// One state tensor: an input `name`, the output `next` that replaces it after each prediction.
    public struct State: Decodable, Equatable, Sendable {
        public let name: String
        public let shape: [Int]
        public let dtype: String?
        /// Initial value; "zeros" is the only one turbovaed writes.
        public let initial: String
        /// The output that becomes this input for the next chunk.
        public let next: String

        enum CodingKeys: String, CodingKey {
            case name = "name"
            case shape = "shape"
            case dtype = "dtype"
            case initial = "init"
            case next = "next"
        }
    }

    /// k: latent frames per prediction (the manifest's inputs[0].shape[0]).
    public let chunkLatentFrames: Int
    /// rt * k: frames each prediction outputs (the manifest's outputs[0].shape[0]).
    public let framesPerChunk: Int
    /// Frames to drop from the first chunk when trim = 1 (v1 rule; unused with `validOutput`).
    public let firstChunkSkip: Int
    public let states: [State]
    /// The control inputs fed after `latents`, in order (each [1, 1, 1, 1]); v1: ["first", "trim"].
    public let controls: [String]
    /// The output that marks the rows of `frames` to keep (> 0.5); nil: the v1 skip and tail rules.
    public let validOutput: String?
    /// Extra predictions after the last real chunk of each segment (their valid rows are kept); v1: 0.
    public let flushChunks: Int
    /// Latent indices at which the video restarts (states reset, controls counted from there); []: no restart.
    public let restartAt: [Int]

    enum CodingKeys: String, CodingKey {
        case chunkLatentFrames = "chunk_latent_frames"
        case framesPerChunk = "frames_per_chunk"
        case firstChunkSkip = "first_chunk_skip"
        case states = "states"
        case controls = "controls"
        case validOutput = "valid_output"
        case flushChunks = "flush_chunks"
        case restartAt = "restart_at"
    }

    public init(chunkLatentFrames: Int, framesPerChunk: Int, firstChunkSkip: Int, states: [State],
                controls: [String] = StreamSpec.defaultControls, validOutput: String? = nil, flushChunks: Int = 0,
                restartAt: [Int] = []) {
        self.chunkLatentFrames = chunkLatentFrames
        self.framesPerChunk = framesPerChunk
        self.firstChunkSkip = firstChunkSkip
        self.states = states
        self.controls = controls
        self.validOutput = validOutput
        self.flushChunks = flushChunks
        self.restartAt = restartAt
    }

    /// Absent (or null) v2 fields read as v1: controls first, trim; no valid output, no flush, one segment.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        chunkLatentFrames = try container.decode(Int.self, forKey: .chunkLatentFrames)
        framesPerChunk = try container.decode(Int.self, forKey: .framesPerChunk)
        firstChunkSkip = try container.decode(Int.self, forKey: .firstChunkSkip)
        states = try container.decode([State].self, forKey: .states)
        controls = try container.decodeIfPresent([String].self, forKey: .controls) ?? Self.defaultControls
        validOutput = try container.decodeIfPresent(String.self, forKey: .validOutput)
        flushChunks = try container.decodeIfPresent(Int.self, forKey: .flushChunks) ?? 0
        restartAt = try container.decodeIfPresent([Int].self, forKey: .restartAt) ?? []
    }

    /// The control inputs ([1, 1, 1, 1]) a streaming step may take after `latents` (manifest `stream.controls`):
    /// `first`: 1 on the first chunk of a segment, else 0; `trim`: `first` when the segment's full decode trims;
    /// `start`: latent index, within the segment, of the chunk's first latent frame; `remaining`: the segment's
    /// latent frames minus start (small numbers, exact in fp16 however long the video).
    public static let firstInput = "first"
    public static let trimInput = "trim"
    public static let startInput = "start"
    public static let remainingInput = "remaining"
    /// Every control this app can feed (turbo_vaed/streaming.py CONTROLS), and the v1 controls (no `controls`).
    public static let knownControls = [firstInput, trimInput, startInput, remainingInput]
    public static let defaultControls = [firstInput, trimInput]
    /// A 5-second Wan clip: 21 latent frames (81 frames), the default clip of `turbovaed bench --stream`.
    public static let defaultClipLatentFrames = 21

    /// Output frames per latent frame (the temporal upsampling factor rt).
    public var framesPerLatentFrame: Int { framesPerChunk / chunkLatentFrames }

    /// The `stream` section agrees with the manifest's inputs and outputs.
    public func check(inputs: [ArtifactManifest.Tensor], outputs: [ArtifactManifest.Tensor],
                      source: String = "manifest") throws {
        guard let latents = inputs.first, let frames = outputs.first else {
            throw BenchError("\(source): a streaming manifest needs inputs and outputs")
        }
        guard chunkLatentFrames >= 1, latents.shape.first == chunkLatentFrames else {
            throw BenchError("\(source): stream.chunk_latent_frames \(chunkLatentFrames) is not inputs[0].shape[0] "
                + "\(latents.shape)")
        }
        guard framesPerChunk >= chunkLatentFrames, framesPerChunk % chunkLatentFrames == 0,
              frames.shape.first == framesPerChunk else {
            throw BenchError("\(source): stream.frames_per_chunk \(framesPerChunk) must be a multiple of the chunk's "
                + "\(chunkLatentFrames) latent frames and outputs[0].shape[0] \(frames.shape)")
        }
        guard firstChunkSkip >= 0, firstChunkSkip <= framesPerChunk else {
            throw BenchError("\(source): stream.first_chunk_skip \(firstChunkSkip) is not in 0...\(framesPerChunk)")
        }
        let inputShapes = Dictionary(inputs.map { ($0.name, $0.shape) }, uniquingKeysWith: { first, _ in first })
        let outputShapes = Dictionary(outputs.map { ($0.name, $0.shape) }, uniquingKeysWith: { first, _ in first })
        var seen = Set<String>()
        for control in controls {
            guard Self.knownControls.contains(control) else {
                throw BenchError("\(source): stream.controls names '\(control)', a control this app does not know "
                    + "(it feeds \(Self.knownControls.joined(separator: ", "))): update the app")
            }
            guard seen.insert(control).inserted else {
                throw BenchError("\(source): stream.controls lists '\(control)' twice")
            }
            guard let shape = inputShapes[control] else {
                throw BenchError("\(source): a streaming step needs the input '\(control)'; export it again with "
                    + "--stream")
            }
            guard shape == [1, 1, 1, 1] else {
                throw BenchError("\(source): control input '\(control)' has shape \(shape), not [1, 1, 1, 1]")
            }
        }
        for state in states {
            guard state.initial == "zeros" else {
                throw BenchError("\(source): state \(state.name) has init '\(state.initial)'; this app knows 'zeros'")
            }
            guard inputShapes[state.name] == state.shape else {
                throw BenchError("\(source): state \(state.name) \(state.shape) is not an input of that shape")
            }
            guard outputShapes[state.next] == state.shape else {
                throw BenchError("\(source): state \(state.name)'s next '\(state.next)' is not an output of shape "
                    + "\(state.shape)")
            }
        }
        let fed = Set([latents.name] + controls + states.map(\.name))
        for input in inputs where !fed.contains(input.name) {
            throw BenchError("\(source): input '\(input.name)' is neither the latents, a control (stream.controls "
                + "\(controls)) nor a state: this app cannot feed it")
        }
        if let validOutput {
            guard validOutput != frames.name, !states.contains(where: { $0.next == validOutput }),
                  let shape = outputShapes[validOutput] else {
                throw BenchError("\(source): stream.valid_output '\(validOutput)' is not an output of its own "
                    + "(outputs: \(outputs.map(\.name).joined(separator: ", ")))")
            }
            guard shape.first == framesPerChunk, shape.reduce(1, *) == framesPerChunk else {
                throw BenchError("\(source): stream.valid_output '\(validOutput)' has shape \(shape), not "
                    + "[\(framesPerChunk), 1, 1, 1] (one value per frame of a chunk)")
            }
        }
        guard flushChunks >= 0 else {
            throw BenchError("\(source): stream.flush_chunks \(flushChunks) must be >= 0")
        }
        guard flushChunks == 0 || validOutput != nil else {
            throw BenchError("\(source): stream.flush_chunks \(flushChunks) needs stream.valid_output (which frames "
                + "of a flush chunk to keep)")
        }
        for (previous, index) in zip([0] + restartAt, restartAt) where index <= previous {
            throw BenchError("\(source): stream.restart_at \(restartAt) must be strictly increasing latent indices "
                + "> 0 ([]: no restart)")
        }
    }

    /// The segments a clip of `clipLatentFrames` is decoded as: the latent range cut at every `restartAt` index
    /// below its length (turbo_vaed/streaming.py `segments`; [21] and 45 frames: [0, 21), [21, 45)).
    public func segments(clipLatentFrames: Int) -> [Range<Int>] {
        guard clipLatentFrames > 0 else { return [] }
        let cuts = [0] + restartAt.filter { $0 > 0 && $0 < clipLatentFrames } + [clipLatentFrames]
        return zip(cuts, cuts.dropFirst()).compactMap { start, end -> Range<Int>? in start < end ? start..<end : nil }
    }

    /// v1 rule: frames the loop keeps from chunk `index` (of its segment) holding `latentFrames` real latent
    /// frames (k, or fewer at the end).
    public func keptFrames(index: Int, latentFrames: Int, trim: Bool) -> Int {
        var kept = Swift.min(latentFrames, chunkLatentFrames) * framesPerLatentFrame
        if index == 0 && trim {
            kept -= firstChunkSkip
        }
        return Swift.max(kept, 0)
    }
}
