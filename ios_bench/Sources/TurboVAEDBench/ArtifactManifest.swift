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
/// frame), `first` = 1 only for i == 0, `trim` = `first` when the full decode of the clip trims, and every
/// state; it keeps `frames` (the first n * frames_per_chunk / k of a short last chunk, minus the first
/// `first_chunk_skip` frames of the first chunk when trim = 1) and feeds each state's `next` output back.
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
    /// Frames to drop from the first chunk when trim = 1.
    public let firstChunkSkip: Int
    public let states: [State]

    enum CodingKeys: String, CodingKey {
        case chunkLatentFrames = "chunk_latent_frames"
        case framesPerChunk = "frames_per_chunk"
        case firstChunkSkip = "first_chunk_skip"
        case states = "states"
    }

    /// Names of the two flag inputs ([1, 1, 1, 1]) every streaming step takes after `latents`.
    public static let firstInput = "first"
    public static let trimInput = "trim"
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
        for flag in [Self.firstInput, Self.trimInput] where inputShapes[flag] == nil {
            throw BenchError("\(source): a streaming step needs the input '\(flag)'; export it again with --stream")
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
    }

    /// Frames the loop keeps from chunk `index` holding `latentFrames` real latent frames (k, or fewer at the end).
    public func keptFrames(index: Int, latentFrames: Int, trim: Bool) -> Int {
        var kept = Swift.min(latentFrames, chunkLatentFrames) * framesPerLatentFrame
        if index == 0 && trim {
            kept -= firstChunkSkip
        }
        return Swift.max(kept, 0)
    }

    /// Frames a clip of `clipLatentFrames` streams into.
    public func totalFrames(clipLatentFrames: Int, trim: Bool) -> Int {
        var total = 0
        var start = 0
        var index = 0
        while start < clipLatentFrames {
            total += keptFrames(index: index, latentFrames: Swift.min(chunkLatentFrames, clipLatentFrames - start),
                                trim: trim)
            start += chunkLatentFrames
            index += 1
        }
        return total
    }
}
