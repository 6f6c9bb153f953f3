import Foundation

/// The fields of `<name>.manifest.json` (turbovaed.manifest/1) that the benchmark needs.
///
/// `turbovaed export` writes the manifest next to the artifact: `wan-256p.mlpackage` ->
/// `wan-256p.manifest.json`. A compiled `wan-256p.mlmodelc` uses the same name.
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
    }

    static let families: Set<String> = ["hunyuan", "cogvideox", "ltx", "wan"]

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
        guard ArtifactManifest.families.contains(family) else {
            throw BenchError("\(source): unknown family '\(family)'")
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
    }

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
