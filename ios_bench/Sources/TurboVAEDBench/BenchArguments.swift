import Foundation

/// Launch arguments of the app (and the macOS command line), e.g.
/// `-model turbovaed/wan-256p.mlpackage -computeUnits all,cpuAndNeuralEngine -warmup 2 -iters 10
///  -latents turbovaed/z.npy -output turbovaed/results.json -exitWhenDone YES`.
/// Relative paths are under the app's Documents folder. Unknown arguments (Xcode adds some) are ignored.
/// A streaming artifact (`turbovaed export --stream`) is streamed over a clip: `-streamFrames 21 -trim YES`
/// (`-trim NO,YES`: one value per segment when the manifest's `restart_at` cuts the clip into segments).
public struct BenchArguments: Equatable, Sendable {
    public var model: String
    public var computeUnits: [ComputeUnitsOption] = [.all]
    public var warmup: Int = 2
    public var iterations: Int = 10
    public var latents: String? = nil
    public var seed: UInt64 = 0
    public var output: String = "turbovaed-bench.json"
    public var deviceKind: String? = nil
    public var computePlan: Bool = true
    public var keepSamples: Bool = true
    public var exitWhenDone: Bool = false
    /// Latent frames of the clip a streaming artifact decodes chunk by chunk (nil: the latents file's, else 21).
    public var streamFrames: Int? = nil
    /// Streaming: whether the full decode of each segment of the clip (the whole clip without `restart_at`) trims
    /// its first frames (the `trim` control; wan/hunyuan/ltx always, cogvideox for an odd number of latent frames):
    /// one value per segment, or one for every segment.
    public var trims: [Bool] = [true]

    public init(model: String) {
        self.model = model
    }

    /// `device.kind` values this harness may write.
    public static let deviceKinds: Set<String> = ["iphone16pro", "ios-simulator", "mac"]

    /// Argument names that take a value (written `-name value` or `--name value`).
    public static let names: Set<String> = [
        "model", "computeUnits", "warmup", "iters", "iterations", "latents", "seed", "output", "deviceKind",
        "computePlan", "samples", "exitWhenDone", "streamFrames", "stream-frames", "trim",
    ]

    public static let usage = """
        -model PATH            .mlpackage or .mlmodelc (its NAME.manifest.json beside it); required
        -computeUnits LIST     all,cpuAndNeuralEngine,cpuAndGPU,cpuOnly (comma-separated; default all)
        -warmup N              warm-up predictions after the first one (default 2)
        -iters N               counted predictions (default 10)
        -latents PATH          .npy or raw .bin float16/float32 [T,C,h,w] (default: random, -seed N)
        -output PATH           results JSON (turbovaed.bench/1; default turbovaed-bench.json in Documents)
        -deviceKind KIND       iphone16pro | ios-simulator | mac (default: detected)
        -computePlan YES|NO    MLComputePlan summary (default YES)
        -samples YES|NO        write every latency sample (default YES)
        -exitWhenDone YES|NO   quit after writing the JSON (default NO)
        -streamFrames N        streaming artifacts (export --stream): latent frames of the clip to stream
                               (default: the latents file's, else 21); an error for a whole-chunk artifact
        -trim YES|NO[,...]     streaming: the clip's full decode trims its first frames (default YES;
                               cogvideox: YES for an odd number of latent frames only); with the manifest's
                               restart_at, one value per segment (comma-separated) or one for all
        """

    /// Parse launch arguments (without the executable path). Nil when there is no `-model`: the app then
    /// waits for the user.
    public static func parse(_ arguments: [String]) throws -> BenchArguments? {
        var values: [String: String] = [:]
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            let name = String(argument.drop(while: { $0 == "-" }))
            if argument.hasPrefix("-"), names.contains(name) {
                guard index + 1 < arguments.count else {
                    throw BenchError("\(argument) needs a value")
                }
                values[name] = arguments[index + 1]
                index += 2
            } else {
                index += 1
            }
        }
        guard let model = values["model"], !model.isEmpty else { return nil }
        var parsed = BenchArguments(model: model)
        if let text = values["computeUnits"] {
            parsed.computeUnits = try ComputeUnitsOption.parseList(text)
        }
        if let text = values["warmup"] {
            parsed.warmup = try integer(text, name: "-warmup", minimum: 0)
        }
        if let text = values["iters"] ?? values["iterations"] {
            parsed.iterations = try integer(text, name: "-iters", minimum: 1)
        }
        if let text = values["latents"], !text.isEmpty {
            parsed.latents = text
        }
        if let text = values["seed"] {
            guard let seed = UInt64(text) else { throw BenchError("-seed must be a non-negative integer, got '\(text)'") }
            parsed.seed = seed
        }
        if let text = values["output"], !text.isEmpty {
            parsed.output = text
        }
        if let text = values["deviceKind"] {
            guard deviceKinds.contains(text) else {
                throw BenchError("-deviceKind '\(text)' is not one of \(deviceKinds.sorted().joined(separator: ", "))")
            }
            parsed.deviceKind = text
        }
        if let text = values["computePlan"] {
            parsed.computePlan = try boolean(text, name: "-computePlan")
        }
        if let text = values["samples"] {
            parsed.keepSamples = try boolean(text, name: "-samples")
        }
        if let text = values["exitWhenDone"] {
            parsed.exitWhenDone = try boolean(text, name: "-exitWhenDone")
        }
        if let text = values["streamFrames"] ?? values["stream-frames"] {
            parsed.streamFrames = try integer(text, name: "-streamFrames", minimum: 1)
        }
        if let text = values["trim"] {
            parsed.trims = try text.split(separator: ",", omittingEmptySubsequences: false).map {
                try boolean(String($0), name: "-trim")
            }
        }
        return parsed
    }

    static func integer(_ text: String, name: String, minimum: Int) throws -> Int {
        guard let value = Int(text), value >= minimum else {
            throw BenchError("\(name) must be an integer >= \(minimum), got '\(text)'")
        }
        return value
    }

    static func boolean(_ text: String, name: String) throws -> Bool {
        switch text.lowercased() {
        case "yes", "true", "1": return true
        case "no", "false", "0": return false
        default: throw BenchError("\(name) must be YES or NO, got '\(text)'")
        }
    }

    /// The run these arguments describe; paths resolved against `documents` and the app bundle.
    public func configuration(documents: URL?, bundle: Bundle? = .main) throws -> BenchConfiguration {
        let modelURL = try ModelLoader.resolve(model, documents: documents, bundle: bundle)
        var source = LatentsSource.random(seed: seed)
        if let latents {
            source = .file(try resolveFile(latents, documents: documents))
        }
        let configuration = BenchConfiguration(
            modelURL: modelURL, computeUnits: computeUnits, warmup: warmup, iterations: iterations,
            latents: source, deviceKind: deviceKind, computePlan: computePlan, keepSamples: keepSamples,
            streamFrames: streamFrames, trims: trims
        )
        try configuration.validate()
        return configuration
    }

    /// Where the JSON goes: `-output` as given when absolute, else under `documents`.
    public func outputURL(documents: URL?) -> URL {
        if output.hasPrefix("/") {
            return URL(fileURLWithPath: output)
        }
        let base = documents ?? URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        return base.appendingPathComponent(output)
    }

    func resolveFile(_ path: String, documents: URL?) throws -> URL {
        let fm = FileManager.default
        let candidates: [URL]
        if path.hasPrefix("/") {
            candidates = [URL(fileURLWithPath: path)]
        } else {
            candidates = [documents?.appendingPathComponent(path),
                          URL(fileURLWithPath: fm.currentDirectoryPath).appendingPathComponent(path)].compactMap { $0 }
        }
        guard let found = candidates.first(where: { fm.fileExists(atPath: $0.path) }) else {
            throw BenchError("latents file not found: \(path); copy it into the app's Documents folder")
        }
        return found
    }
}
