import CoreML
import Foundation

/// What to benchmark and how.
public struct BenchConfiguration: Equatable, Sendable {
    /// `.mlpackage` (compiled on the device at load time) or `.mlmodelc`, with its manifest beside it.
    public var modelURL: URL
    /// One result per entry, in order.
    public var computeUnits: [ComputeUnitsOption]
    /// Predictions run and discarded after the first (cold) one.
    public var warmup: Int
    /// Counted predictions.
    public var iterations: Int
    public var latents: LatentsSource
    /// `device.kind` to write; nil: "iphone16pro" on an iOS device, "ios-simulator", or "mac".
    public var deviceKind: String?
    /// Add the MLComputePlan summary where the OS has it.
    public var computePlan: Bool
    /// Write every latency sample, not only the summary.
    public var keepSamples: Bool

    public init(modelURL: URL, computeUnits: [ComputeUnitsOption] = [.all], warmup: Int = 2, iterations: Int = 10,
                latents: LatentsSource = .random(seed: 0), deviceKind: String? = nil, computePlan: Bool = true,
                keepSamples: Bool = true) {
        self.modelURL = modelURL
        self.computeUnits = computeUnits
        self.warmup = warmup
        self.iterations = iterations
        self.latents = latents
        self.deviceKind = deviceKind
        self.computePlan = computePlan
        self.keepSamples = keepSamples
    }

    public func validate() throws {
        guard iterations >= 1 else { throw BenchError("iterations must be >= 1 (got \(iterations))") }
        guard warmup >= 0 else { throw BenchError("warmup must be >= 0 (got \(warmup))") }
        guard !computeUnits.isEmpty else { throw BenchError("no compute units to run") }
        if let deviceKind, !BenchArguments.deviceKinds.contains(deviceKind) {
            throw BenchError("unknown device kind '\(deviceKind)': use one of "
                + BenchArguments.deviceKinds.sorted().joined(separator: ", "))
        }
    }
}

/// Where a run is.
public enum BenchPhase: String, Equatable, Sendable {
    case loading
    case firstRun
    case warmup
    case measuring
    case computePlan
    case done
}

/// Live numbers for the screen, sent after every step.
public struct BenchProgress: Equatable, Sendable {
    public var computeUnits: ComputeUnitsOption
    public var phase: BenchPhase
    /// 1-based index within the phase, and the phase's length.
    public var iteration: Int = 0
    public var total: Int = 0
    public var loadMs: Double?
    public var firstRunMs: Double?
    public var lastMs: Double?
    public var p50Ms: Double?
    public var fps: Double?
    public var peakMemoryBytes: UInt64?
    public var thermal: String
}

/// Runs the benchmark: for each compute-units setting, load (compile) -> first prediction -> warm-up ->
/// counted predictions, timed with ContinuousClock; memory sampled throughout; thermal state before/after.
public struct BenchmarkRunner: Sendable {
    public typealias ProgressHandler = @Sendable (BenchProgress) -> Void

    public static let simulatorNote = "iOS simulator: no Neural Engine; Core ML runs on the Mac's CPU/GPU, "
        + "so these figures do not represent an iPhone"

    public let configuration: BenchConfiguration
    private let clock = ContinuousClock()

    public init(configuration: BenchConfiguration) {
        self.configuration = configuration
    }

    /// Every configured compute-units setting, as one turbovaed.bench/1 document.
    public func run(progress: ProgressHandler? = nil) async throws -> BenchDocument {
        try configuration.validate()
        let manifest = try ArtifactManifest.load(forModel: configuration.modelURL)
        var results: [BenchResult] = []
        for units in configuration.computeUnits {
            try Task.checkCancellation()
            results.append(try await measure(units: units, manifest: manifest, progress: progress))
        }
        return BenchDocument(created: Self.timestamp(), results: results)
    }

    /// One result: cold start, warm-up, counted predictions, memory, thermal state, compute plan.
    public func measure(units: ComputeUnitsOption, manifest: ArtifactManifest,
                        progress: ProgressHandler? = nil) async throws -> BenchResult {
        let thermalBefore = DeviceProbe.thermalState()
        var report = BenchProgress(computeUnits: units, phase: .loading, thermal: thermalBefore)
        func emit(_ update: (inout BenchProgress) -> Void) {
            update(&report)
            progress?(report)
        }
        let frames = manifest.framesPerDecode
        let sampler = MemorySampler()
        sampler.start()
        defer { sampler.stop() }
        emit { $0.phase = .loading }

        let loaded = try await ModelLoader.load(configuration.modelURL, computeUnits: units, clock: clock)
        defer { ModelLoader.cleanUp(loaded) }
        emit { $0.phase = .firstRun; $0.loadMs = loaded.loadMs }

        let io = try ModelIO(model: loaded.model, manifest: manifest)
        let input = try Latents.makeInput(configuration.latents, shape: manifest.inputShape,
                                          dataType: io.inputDataType)
        let features = try MLDictionaryFeatureProvider(dictionary: [io.inputName: MLFeatureValue(multiArray: input)])
        let model = loaded.model

        var firstRunMs = 0.0
        let nonFinite: Int = try autoreleasepool { () throws -> Int in
            let start = clock.now
            let output = try model.prediction(from: features)
            firstRunMs = LatencyStats.milliseconds(start.duration(to: clock.now))
            return try io.check(output, manifest: manifest)
        }
        sampler.sample()
        emit { $0.firstRunMs = firstRunMs; $0.peakMemoryBytes = sampler.peakBytes }

        for index in 0..<configuration.warmup {
            try Task.checkCancellation()
            try autoreleasepool {
                _ = try model.prediction(from: features)
            }
            sampler.sample()
            emit { $0.phase = .warmup; $0.iteration = index + 1; $0.total = configuration.warmup }
        }

        var samples: [Double] = []
        samples.reserveCapacity(configuration.iterations)
        for index in 0..<configuration.iterations {
            try Task.checkCancellation()
            let elapsedMs: Double = try autoreleasepool { () throws -> Double in
                let start = clock.now
                _ = try model.prediction(from: features)
                return LatencyStats.milliseconds(start.duration(to: clock.now))
            }
            samples.append(elapsedMs)
            sampler.sample()
            let p50 = LatencyStats.percentile(samples.sorted(), 50)
            let thermalNow = DeviceProbe.thermalState()
            emit {
                $0.phase = .measuring
                $0.iteration = index + 1
                $0.total = configuration.iterations
                $0.lastMs = elapsedMs
                $0.p50Ms = p50
                $0.fps = LatencyStats.fps(outputFrames: frames, p50Ms: p50)
                $0.peakMemoryBytes = sampler.peakBytes
                $0.thermal = thermalNow
            }
        }
        let peak = sampler.stop()
        let thermalAfter = DeviceProbe.thermalState()

        var plan: [String: [String: Int]]? = nil
        if configuration.computePlan {
            emit { $0.phase = .computePlan }
            plan = await ComputePlanSummary.summarize(compiledURL: loaded.compiledURL, computeUnits: units)
        }

        let latency = try LatencyStats.summary(samples, keepSamples: configuration.keepSamples)
        let device = DeviceProbe.describe(kind: configuration.deviceKind)
        let notes = Self.notes(loaded: loaded, io: io, manifest: manifest, device: device, nonFinite: nonFinite,
                               plan: plan, wantedPlan: configuration.computePlan, latents: configuration.latents)
        let result = BenchResult(
            label: "student/coreml-\(units.rawValue)",
            device: device,
            runtime: BenchRuntime(version: DeviceProbe.coreMLVersion(), computeUnits: units.rawValue,
                                  precision: Self.schemaPrecision(manifest.precision)),
            model: BenchModel(
                family: manifest.family, artifact: configuration.modelURL.lastPathComponent,
                artifactSha256: manifest.validSha256,
                artifactBytes: ModelLoader.byteCount(of: configuration.modelURL) ?? manifest.sizeBytes,
                preset: manifest.preset, width: manifest.width, height: manifest.height,
                latentShape: manifest.latentShape5D, outputFrames: frames
            ),
            settings: BenchSettings(warmup: configuration.warmup, iterations: configuration.iterations),
            coldStart: ColdStart(loadMs: loaded.loadMs, firstRunMs: firstRunMs),
            latencyMs: latency,
            fps: LatencyStats.fps(outputFrames: frames, p50Ms: latency.p50),
            peakMemoryBytes: peak.map { Int(clamping: $0) },
            thermal: ThermalReading(before: thermalBefore, after: thermalAfter),
            computePlan: plan,
            notes: notes
        )
        emit { $0.phase = .done }
        return result
    }

    static func notes(loaded: LoadedModel, io: ModelIO, manifest: ArtifactManifest, device: BenchDevice,
                      nonFinite: Int, plan: [String: [String: Int]]?, wantedPlan: Bool,
                      latents: LatentsSource) -> String {
        var notes: [String] = []
        if loaded.compileMs > 0 {
            notes.append(String(format: "load_ms includes on-device compilation of the .mlpackage (%.0f ms)",
                                loaded.compileMs))
        }
        let dtype = io.inputDataType == .float32 ? "float32" : "float16"
        notes.append("\(latents.summary), \(dtype) input \(manifest.inputShape)")
        if DeviceProbe.isSimulator {
            notes.append(simulatorNote)
        } else if device.kind == "iphone16pro", !DeviceProbe.isIPhone16Pro(device.model) {
            let name = DeviceProbe.iPhoneModels[device.model]?.name ?? device.model
            notes.append("device is \(name) (\(device.model)), not an iPhone 16 Pro")
        }
        if nonFinite > 0 {
            notes.append("WARNING: \(nonFinite) of the sampled output values are not finite")
        }
        if let plan {
            notes.append(ComputePlanSummary.describe(plan))
        } else if wantedPlan {
            notes.append("compute plan unavailable (MLComputePlan needs iOS 17.4+ or macOS 14.4+)")
        }
        return notes.joined(separator: "; ")
    }

    /// The manifest's precision where the schema knows it.
    static func schemaPrecision(_ precision: String?) -> String? {
        guard let precision, ["fp32", "fp16", "bf16", "mixed"].contains(precision) else { return nil }
        return precision
    }

    /// ISO-8601 UTC time, e.g. 2025-01-31T12:00:00Z.
    public static func timestamp(_ date: Date = Date()) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }
}
