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
    /// Streaming artifacts: latent frames of the clip (nil: the latents file's, else 21). Set for a whole-chunk
    /// artifact, it is an error (export with --stream).
    public var streamFrames: Int?
    /// Streaming artifacts: whether the full decode of each segment trims (the `trim` control on its first chunk):
    /// one value per segment of the clip cut at the manifest's `restart_at`, or one for every segment.
    public var trims: [Bool]

    public init(modelURL: URL, computeUnits: [ComputeUnitsOption] = [.all], warmup: Int = 2, iterations: Int = 10,
                latents: LatentsSource = .random(seed: 0), deviceKind: String? = nil, computePlan: Bool = true,
                keepSamples: Bool = true, streamFrames: Int? = nil, trims: [Bool] = [true]) {
        self.modelURL = modelURL
        self.computeUnits = computeUnits
        self.warmup = warmup
        self.iterations = iterations
        self.latents = latents
        self.deviceKind = deviceKind
        self.computePlan = computePlan
        self.keepSamples = keepSamples
        self.streamFrames = streamFrames
        self.trims = trims
    }

    public func validate() throws {
        guard iterations >= 1 else { throw BenchError("iterations must be >= 1 (got \(iterations))") }
        if let streamFrames, streamFrames < 1 {
            throw BenchError("streamFrames must be >= 1 (got \(streamFrames))")
        }
        guard warmup >= 0 else { throw BenchError("warmup must be >= 0 (got \(warmup))") }
        guard !trims.isEmpty else { throw BenchError("trims needs one value, or one per segment") }
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
    case streaming
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
    /// Streaming: frames decoded so far in the clip.
    public var streamedFrames: Int? = nil
}

/// Runs the benchmark: for each compute-units setting, load (compile) -> first prediction -> warm-up ->
/// counted predictions, timed with ContinuousClock; memory sampled throughout; thermal state before/after.
/// A streaming artifact (manifest `stream` section) instead streams one clip chunk by chunk right after loading
/// (`measureStream`): first-chunk latency, steady latency per chunk, sustained FPS, peak memory.
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
        if manifest.stream == nil, configuration.streamFrames != nil {
            throw BenchError("\(configuration.modelURL.lastPathComponent) is a whole-chunk artifact: export it with "
                + "`turbovaed export --stream` to stream a clip, or drop -streamFrames")
        }
        for units in configuration.computeUnits {
            try Task.checkCancellation()
            if manifest.stream != nil {
                results.append(try await measureStream(units: units, manifest: manifest, progress: progress))
            } else {
                results.append(try await measure(units: units, manifest: manifest, progress: progress))
            }
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

    /// One streamed clip (streaming artifacts): load -> every chunk of the clip (per segment of the clip cut at
    /// `restart_at`, then its `flush_chunks`), each prediction's state outputs fed back as the next one's inputs
    /// (reset at each segment start). The first chunk is the first prediction after loading (first-frame latency, as
    /// `turbovaed bench --stream` on the host); `latency_ms` holds the later chunks; `frames` counts the kept
    /// frames (the valid rows with `valid_output`).
    public func measureStream(units: ComputeUnitsOption, manifest: ArtifactManifest,
                              progress: ProgressHandler? = nil) async throws -> BenchResult {
        guard let spec = manifest.stream else {
            throw BenchError("\(configuration.modelURL.lastPathComponent) is a whole-chunk artifact")
        }
        let thermalBefore = DeviceProbe.thermalState()
        var report = BenchProgress(computeUnits: units, phase: .loading, thermal: thermalBefore)
        func emit(_ update: (inout BenchProgress) -> Void) {
            update(&report)
            progress?(report)
        }
        let clipFrames = try Latents.clipLatentFrames(configuration.latents, requested: configuration.streamFrames)
        let plan = try StreamPlan(spec: spec, clipLatentFrames: clipFrames, trims: configuration.trims)
        let chunkShape = manifest.inputShape
        let clip = try Latents.makeClip(configuration.latents, latentFrames: clipFrames,
                                        frameShape: Array(chunkShape.dropFirst()))
        let sampler = MemorySampler()
        sampler.start()
        defer { sampler.stop() }
        emit { $0.phase = .loading }

        let loaded = try await ModelLoader.load(configuration.modelURL, computeUnits: units, clock: clock)
        defer { ModelLoader.cleanUp(loaded) }
        emit { $0.phase = .streaming; $0.loadMs = loaded.loadMs }

        let io = try StreamIO(model: loaded.model, manifest: manifest)
        let feeder = try StreamFeeder(io: io, plan: plan, clip: clip, chunkShape: chunkShape)
        let model = loaded.model
        let chunks = plan.chunks
        let expectedFrames = [spec.framesPerChunk, 3, manifest.height, manifest.width]
        var times: [Double] = []
        times.reserveCapacity(chunks.count)
        var frames = 0
        var nonFinite = 0
        var firstFrameMs: Double? = nil
        let clipStart = clock.now
        for chunk in chunks {
            try Task.checkCancellation()
            // the first chunk of each segment starts from the initial states (features(for:) resets them)
            let features = try feeder.features(for: chunk)
            let (elapsedMs, kept): (Double, Int) = try autoreleasepool { () throws -> (Double, Int) in
                let start = clock.now
                let output = try model.prediction(from: features)
                let framesOut = try feeder.carry(output)
                let ms = LatencyStats.milliseconds(start.duration(to: clock.now))
                if chunk.index == 0 {
                    let shape = framesOut.shape.map(\.intValue)
                    guard Latents.squeezeLeadingOnes(shape) == Latents.squeezeLeadingOnes(expectedFrames) else {
                        throw BenchError("frames output shape \(shape) differs from the manifest's \(expectedFrames)")
                    }
                    nonFinite = ModelIO.nonFiniteSamples(framesOut)
                }
                // v1: the chunk's planned count; v2 (stream.valid_output): the rows the step marks valid
                let rows = try feeder.keptFrames(output, chunk: chunk)
                return (ms, rows)
            }
            times.append(elapsedMs)
            frames += kept
            if firstFrameMs == nil && kept > 0 {
                firstFrameMs = LatencyStats.milliseconds(clipStart.duration(to: clock.now))
            }
            sampler.sample()
            let steadySoFar = times.count > 1 ? Array(times.dropFirst()) : times
            let p50 = LatencyStats.percentile(steadySoFar.sorted(), 50)
            let seconds = LatencyStats.milliseconds(clipStart.duration(to: clock.now)) / 1000
            let thermalNow = DeviceProbe.thermalState()
            emit {
                $0.phase = .streaming
                $0.iteration = chunk.index + 1
                $0.total = chunks.count
                $0.firstRunMs = times[0]
                $0.lastMs = elapsedMs
                $0.p50Ms = p50
                $0.fps = seconds > 0 ? Double(frames) / seconds : nil
                $0.peakMemoryBytes = sampler.peakBytes
                $0.thermal = thermalNow
                $0.streamedFrames = frames
            }
        }
        let clipMs = LatencyStats.milliseconds(clipStart.duration(to: clock.now))
        let peak = sampler.stop()
        let thermalAfter = DeviceProbe.thermalState()

        var opPlan: [String: [String: Int]]? = nil
        if configuration.computePlan {
            emit { $0.phase = .computePlan }
            opPlan = await ComputePlanSummary.summarize(compiledURL: loaded.compiledURL, computeUnits: units)
        }

        let steady = times.count > 1 ? Array(times.dropFirst()) : times
        let latency = try LatencyStats.summary(steady, keepSamples: configuration.keepSamples)
        let device = DeviceProbe.describe(kind: configuration.deviceKind)
        let dtype = io.latentsType == .float32 ? "float32" : "float16"
        let notes = Self.streamNotes(plan: plan, chunks: chunks.count) + "; "
            + Self.notes(loaded: loaded, latentsSummary: configuration.latents.summary,
                         inputSummary: "\(dtype) chunk input \(chunkShape)", device: device, nonFinite: nonFinite,
                         plan: opPlan, wantedPlan: configuration.computePlan)
        let summary = StreamSummary(
            chunkLatentFrames: spec.chunkLatentFrames, latentFrames: clipFrames, frames: frames,
            firstChunkMs: times[0], steadyChunkMs: ChunkLatencySummary(latency),
            sustainedFps: clipMs > 0 ? Double(frames) / (clipMs / 1000) : 0,
            firstFrameMs: firstFrameMs, calls: times.count
        )
        let result = BenchResult(
            label: "student/coreml-\(units.rawValue)-stream",
            device: device,
            runtime: BenchRuntime(version: DeviceProbe.coreMLVersion(), computeUnits: units.rawValue,
                                  precision: Self.schemaPrecision(manifest.precision)),
            model: BenchModel(
                family: manifest.family, artifact: configuration.modelURL.lastPathComponent,
                artifactSha256: manifest.validSha256,
                artifactBytes: ModelLoader.byteCount(of: configuration.modelURL) ?? manifest.sizeBytes,
                preset: manifest.preset, width: manifest.width, height: manifest.height,
                latentShape: [1, chunkShape[1], clipFrames, chunkShape[2], chunkShape[3]], outputFrames: frames
            ),
            settings: BenchSettings(warmup: 0, iterations: steady.count),
            coldStart: ColdStart(loadMs: loaded.loadMs, firstRunMs: times[0]),
            latencyMs: latency,
            fps: LatencyStats.fps(outputFrames: spec.framesPerChunk, p50Ms: latency.p50),
            peakMemoryBytes: peak.map { Int(clamping: $0) },
            thermal: ThermalReading(before: thermalBefore, after: thermalAfter),
            computePlan: opPlan,
            notes: notes,
            stream: summary
        )
        emit { $0.phase = .done }
        return result
    }

    /// What a streamed run did, for the notes.
    static func streamNotes(plan: StreamPlan, chunks: Int) -> String {
        let spec = plan.spec
        let segments = plan.segments.count
        let kept: String
        if let valid = spec.validOutput {
            kept = "frames kept where '\(valid)' > 0.5"
        } else {
            let flags = (0..<segments).map { plan.segmentTrims($0) }
            let skip = "first \(spec.firstChunkSkip) frames of the first chunk"
            if !flags.contains(true) {
                kept = "trim = 0"
            } else if flags.allSatisfy({ $0 }) {
                kept = "trim = 1 (\(skip)" + (segments > 1 ? " of each segment" : "") + " dropped)"
            } else {
                let perSegment = flags.map { $0 ? "1" : "0" }.joined(separator: ",")
                kept = "trim per segment \(perSegment) (\(skip) of a segment with trim = 1 dropped)"
            }
        }
        var text = "streamed \(plan.clipLatentFrames) latent frames in \(chunks) chunks of \(spec.chunkLatentFrames) "
            + "(\(spec.framesPerChunk) frames each), \(kept), \(spec.states.count) state tensors fed back as inputs"
        if spec.controls != StreamSpec.defaultControls {
            text += ", controls \(spec.controls.joined(separator: ", "))"
        }
        if !spec.restartAt.isEmpty {
            text += ", \(segments) segment\(segments == 1 ? "" : "s") (restart_at "
                + "\(spec.restartAt.map { String($0) }.joined(separator: ", ")); states reset at each)"
        }
        if spec.flushChunks > 0 {
            text += ", \(spec.flushChunks) flush chunk\(spec.flushChunks == 1 ? "" : "s") after each segment"
        }
        return text + "; first_run_ms is the first chunk, latency_ms the later chunks, fps at their p50"
    }

    static func notes(loaded: LoadedModel, io: ModelIO, manifest: ArtifactManifest, device: BenchDevice,
                      nonFinite: Int, plan: [String: [String: Int]]?, wantedPlan: Bool,
                      latents: LatentsSource) -> String {
        let dtype = io.inputDataType == .float32 ? "float32" : "float16"
        return notes(loaded: loaded, latentsSummary: latents.summary, inputSummary: "\(dtype) input \(manifest.inputShape)",
                     device: device, nonFinite: nonFinite, plan: plan, wantedPlan: wantedPlan)
    }

    static func notes(loaded: LoadedModel, latentsSummary: String, inputSummary: String, device: BenchDevice,
                      nonFinite: Int, plan: [String: [String: Int]]?, wantedPlan: Bool) -> String {
        var notes: [String] = []
        if loaded.compileMs > 0 {
            notes.append(String(format: "load_ms includes on-device compilation of the .mlpackage (%.0f ms)",
                                loaded.compileMs))
        }
        notes.append("\(latentsSummary), \(inputSummary)")
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
