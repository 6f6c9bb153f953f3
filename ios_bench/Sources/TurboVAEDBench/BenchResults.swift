import Foundation

// Codable mirror of turbo_vaed/bench/bench-1.schema.json (turbovaed.bench/1).
// Every CodingKeys raw value is a schema key; tests/test_ios_bench.py reads this file and checks
// that the keys match the schema exactly (all required keys, no unknown ones).
// Optional properties are left out of the JSON when nil; the schema allows that for all of them.

/// The whole results file.
public struct BenchDocument: Codable, Equatable, Sendable {
    public var schema: String
    public var created: String
    public var tool: ToolInfo
    public var results: [BenchResult]
    public var comparisons: [Comparison]?

    enum CodingKeys: String, CodingKey {
        case schema = "schema"
        case created = "created"
        case tool = "tool"
        case results = "results"
        case comparisons = "comparisons"
    }

    public init(created: String, results: [BenchResult], comparisons: [Comparison]? = nil,
                tool: ToolInfo = ToolInfo()) {
        self.schema = TurboVAEDBench.schemaID
        self.created = created
        self.tool = tool
        self.results = results
        self.comparisons = comparisons
    }
}

/// Which harness wrote the file.
public struct ToolInfo: Codable, Equatable, Sendable {
    public var name: String
    public var version: String

    enum CodingKeys: String, CodingKey {
        case name = "name"
        case version = "version"
    }

    public init(name: String = TurboVAEDBench.toolName, version: String = TurboVAEDBench.version) {
        self.name = name
        self.version = version
    }
}

/// baseline p50 / candidate p50 for two labelled results.
public struct Comparison: Codable, Equatable, Sendable {
    public var baseline: String
    public var candidate: String
    public var speedup: Double

    enum CodingKeys: String, CodingKey {
        case baseline = "baseline"
        case candidate = "candidate"
        case speedup = "speedup"
    }

    public init(baseline: String, candidate: String, speedup: Double) {
        self.baseline = baseline
        self.candidate = candidate
        self.speedup = speedup
    }
}

/// One measured configuration (one compute-units setting of one artifact).
public struct BenchResult: Codable, Equatable, Sendable {
    public var label: String
    public var device: BenchDevice
    public var runtime: BenchRuntime
    public var model: BenchModel
    public var settings: BenchSettings
    public var coldStart: ColdStart
    public var latencyMs: LatencySummary
    /// Output frames per second at the p50 latency.
    public var fps: Double
    public var peakMemoryBytes: Int?
    public var thermal: ThermalReading?
    /// Core ML MLComputePlan: operation type -> preferred device ("neural_engine", "gpu", "cpu") -> count.
    public var computePlan: [String: [String: Int]]?
    public var notes: String?
    /// A streamed decode of a whole clip (streaming artifacts only; nil for whole-chunk ones).
    public var stream: StreamSummary?

    enum CodingKeys: String, CodingKey {
        case label = "label"
        case device = "device"
        case runtime = "runtime"
        case model = "model"
        case settings = "settings"
        case coldStart = "cold_start"
        case latencyMs = "latency_ms"
        case fps = "fps"
        case peakMemoryBytes = "peak_memory_bytes"
        case thermal = "thermal"
        case computePlan = "compute_plan"
        case notes = "notes"
        case stream = "stream"
    }

    public init(label: String, device: BenchDevice, runtime: BenchRuntime, model: BenchModel,
                settings: BenchSettings, coldStart: ColdStart, latencyMs: LatencySummary, fps: Double,
                peakMemoryBytes: Int? = nil, thermal: ThermalReading? = nil,
                computePlan: [String: [String: Int]]? = nil, notes: String? = nil, stream: StreamSummary? = nil) {
        self.label = label
        self.device = device
        self.runtime = runtime
        self.model = model
        self.settings = settings
        self.coldStart = coldStart
        self.latencyMs = latencyMs
        self.fps = fps
        self.peakMemoryBytes = peakMemoryBytes
        self.thermal = thermal
        self.computePlan = computePlan
        self.notes = notes
        self.stream = stream
    }
}

/// The machine the numbers come from.
public struct BenchDevice: Codable, Equatable, Sendable {
    /// "iphone16pro", "ios-simulator" or "mac".
    public var kind: String
    /// Hardware identifier, e.g. "iPhone17,1" (iPhone 16 Pro) or "Mac15,8".
    public var model: String
    public var os: String
    public var osVersion: String
    public var cpu: String?
    public var soc: String?
    public var cpuCount: Int?
    public var memoryBytes: Int?

    enum CodingKeys: String, CodingKey {
        case kind = "kind"
        case model = "model"
        case os = "os"
        case osVersion = "os_version"
        case cpu = "cpu"
        case soc = "soc"
        case cpuCount = "cpu_count"
        case memoryBytes = "memory_bytes"
    }

    public init(kind: String, model: String, os: String, osVersion: String, cpu: String? = nil,
                soc: String? = nil, cpuCount: Int? = nil, memoryBytes: Int? = nil) {
        self.kind = kind
        self.model = model
        self.os = os
        self.osVersion = osVersion
        self.cpu = cpu
        self.soc = soc
        self.cpuCount = cpuCount
        self.memoryBytes = memoryBytes
    }
}

/// The runtime: always Core ML here.
public struct BenchRuntime: Codable, Equatable, Sendable {
    public var name: String
    public var version: String
    /// "all", "cpuAndNeuralEngine", "cpuAndGPU" or "cpuOnly".
    public var computeUnits: String?
    public var delegate: String?
    public var threads: Int?
    /// "fp16" or "fp32" (from the artifact manifest).
    public var precision: String?

    enum CodingKeys: String, CodingKey {
        case name = "name"
        case version = "version"
        case computeUnits = "compute_units"
        case delegate = "delegate"
        case threads = "threads"
        case precision = "precision"
    }

    public init(name: String = "coreml", version: String, computeUnits: String?, delegate: String? = nil,
                threads: Int? = nil, precision: String?) {
        self.name = name
        self.version = version
        self.computeUnits = computeUnits
        self.delegate = delegate
        self.threads = threads
        self.precision = precision
    }
}

/// What was decoded: family, artifact, pixel size and latent chunk.
public struct BenchModel: Codable, Equatable, Sendable {
    public var family: String
    /// "student" (exported Turbo-VAED decoders) or "teacher".
    public var decoder: String
    public var artifact: String?
    public var artifactSha256: String?
    public var artifactBytes: Int?
    public var preset: String?
    public var width: Int
    public var height: Int
    /// [batch 1, channels, latent frames, latent height, latent width], the PyTorch (B, C, T, h, w) layout.
    public var latentShape: [Int]
    public var outputFrames: Int

    enum CodingKeys: String, CodingKey {
        case family = "family"
        case decoder = "decoder"
        case artifact = "artifact"
        case artifactSha256 = "artifact_sha256"
        case artifactBytes = "artifact_bytes"
        case preset = "preset"
        case width = "width"
        case height = "height"
        case latentShape = "latent_shape"
        case outputFrames = "output_frames"
    }

    public init(family: String, decoder: String = "student", artifact: String?, artifactSha256: String?,
                artifactBytes: Int?, preset: String?, width: Int, height: Int, latentShape: [Int],
                outputFrames: Int) {
        self.family = family
        self.decoder = decoder
        self.artifact = artifact
        self.artifactSha256 = artifactSha256
        self.artifactBytes = artifactBytes
        self.preset = preset
        self.width = width
        self.height = height
        self.latentShape = latentShape
        self.outputFrames = outputFrames
    }
}

/// Warm-up and counted predictions.
public struct BenchSettings: Codable, Equatable, Sendable {
    public var warmup: Int
    public var iterations: Int

    enum CodingKeys: String, CodingKey {
        case warmup = "warmup"
        case iterations = "iterations"
    }

    public init(warmup: Int, iterations: Int) {
        self.warmup = warmup
        self.iterations = iterations
    }
}

/// Cold start: model load (including on-device compilation of an .mlpackage) and the first prediction.
public struct ColdStart: Codable, Equatable, Sendable {
    public var loadMs: Double
    public var firstRunMs: Double

    enum CodingKeys: String, CodingKey {
        case loadMs = "load_ms"
        case firstRunMs = "first_run_ms"
    }

    public init(loadMs: Double, firstRunMs: Double) {
        self.loadMs = loadMs
        self.firstRunMs = firstRunMs
    }
}

/// Latency of the counted predictions, in milliseconds.
public struct LatencySummary: Codable, Equatable, Sendable {
    public var min: Double
    public var p50: Double
    public var p90: Double
    public var max: Double
    public var mean: Double
    public var samples: [Double]?

    enum CodingKeys: String, CodingKey {
        case min = "min"
        case p50 = "p50"
        case p90 = "p90"
        case max = "max"
        case mean = "mean"
        case samples = "samples"
    }

    public init(min: Double, p50: Double, p90: Double, max: Double, mean: Double, samples: [Double]? = nil) {
        self.min = min
        self.p50 = p50
        self.p90 = p90
        self.max = max
        self.mean = mean
        self.samples = samples
    }
}

/// ProcessInfo.thermalState before the load and after the last prediction.
public struct ThermalReading: Codable, Equatable, Sendable {
    public var before: String?
    public var after: String?

    enum CodingKeys: String, CodingKey {
        case before = "before"
        case after = "after"
    }

    public init(before: String?, after: String?) {
        self.before = before
        self.after = after
    }
}

/// A streamed decode (`turbovaed bench --stream`): a whole clip chunk by chunk, the state carried between
/// predictions. The same fields as the host's turbo_vaed/bench/stream.py writes.
public struct StreamSummary: Codable, Equatable, Sendable {
    /// k: latent frames per prediction.
    public var chunkLatentFrames: Int
    /// T: latent frames of the clip.
    public var latentFrames: Int
    /// Frames the clip streamed into (after the first-chunk skip and the short last chunk).
    public var frames: Int
    /// First-frame latency: the first chunk's prediction (right after loading).
    public var firstChunkMs: Double
    /// Every later chunk's prediction (the first one's when the clip is a single chunk).
    public var steadyChunkMs: ChunkLatencySummary
    /// `frames` / wall time of the whole clip (inputs, predictions, state hand-over).
    public var sustainedFps: Double
    /// Wall time from the first prediction to the first kept frame (a lagging non-causal step: several calls).
    public var firstFrameMs: Double?
    /// Predictions for the whole clip, flush chunks included.
    public var calls: Int?

    enum CodingKeys: String, CodingKey {
        case chunkLatentFrames = "chunk_latent_frames"
        case latentFrames = "latent_frames"
        case frames = "frames"
        case firstChunkMs = "first_chunk_ms"
        case steadyChunkMs = "steady_chunk_ms"
        case sustainedFps = "sustained_fps"
        case firstFrameMs = "first_frame_ms"
        case calls = "calls"
    }

    public init(chunkLatentFrames: Int, latentFrames: Int, frames: Int, firstChunkMs: Double,
                steadyChunkMs: ChunkLatencySummary, sustainedFps: Double, firstFrameMs: Double? = nil,
                calls: Int? = nil) {
        self.chunkLatentFrames = chunkLatentFrames
        self.latentFrames = latentFrames
        self.frames = frames
        self.firstChunkMs = firstChunkMs
        self.steadyChunkMs = steadyChunkMs
        self.sustainedFps = sustainedFps
        self.firstFrameMs = firstFrameMs
        self.calls = calls
    }
}

/// Steady-state latency per chunk, in milliseconds (no samples: `latency_ms` holds them).
public struct ChunkLatencySummary: Codable, Equatable, Sendable {
    public var min: Double
    public var p50: Double
    public var p90: Double
    public var max: Double
    public var mean: Double

    enum CodingKeys: String, CodingKey {
        case min = "min"
        case p50 = "p50"
        case p90 = "p90"
        case max = "max"
        case mean = "mean"
    }

    public init(min: Double, p50: Double, p90: Double, max: Double, mean: Double) {
        self.min = min
        self.p50 = p50
        self.p90 = p90
        self.max = max
        self.mean = mean
    }

    /// The summary part of a `LatencySummary`.
    public init(_ latency: LatencySummary) {
        self.init(min: latency.min, p50: latency.p50, p90: latency.p90, max: latency.max, mean: latency.mean)
    }
}
