import Foundation
import SwiftUI
import TurboVAEDBench
import UIKit

/// State behind the screen: the models found, the settings, live numbers, finished results.
@MainActor
final class BenchViewModel: ObservableObject {
    enum Status: Equatable {
        case idle
        case running(String)
        case finished(String)
        case failed(String)
    }

    @Published var status: Status = .idle
    @Published var progress: BenchProgress?
    @Published var results: [BenchResult] = []
    @Published var models: [URL] = []
    @Published var selectedModel: URL?
    @Published var useAll = true
    @Published var useCPUAndNeuralEngine = false
    @Published var useCPUAndGPU = false
    @Published var useCPUOnly = false
    @Published var warmup = 2
    @Published var iterations = 10
    /// Streaming artifacts (export --stream): latent frames of the clip streamed chunk by chunk, and its trim flag.
    @Published var streamFrames = StreamSpec.defaultClipLatentFrames
    @Published var streamTrim = true
    @Published var outputPath: String?

    private var task: Task<Void, Never>?
    private var startedFromArguments = false

    var isRunning: Bool {
        if case .running = status {
            return true
        }
        return false
    }

    /// The compute units ticked on screen, in the order of ComputeUnitsOption.allCases.
    var selectedComputeUnits: [ComputeUnitsOption] {
        let ticked: [(ComputeUnitsOption, Bool)] = [(.all, useAll), (.cpuAndNeuralEngine, useCPUAndNeuralEngine),
                                                    (.cpuAndGPU, useCPUAndGPU), (.cpuOnly, useCPUOnly)]
        return ticked.filter { $0.1 }.map { $0.0 }
    }

    /// The picked model is a streaming step (its manifest has a `stream` section).
    var selectedIsStreaming: Bool {
        guard let model = selectedModel else { return false }
        return (try? ArtifactManifest.load(forModel: model))?.isStreaming ?? false
    }

    var statusText: String {
        switch status {
        case .idle: return models.isEmpty ? "No models found" : "Ready"
        case .running(let text), .finished(let text): return text
        case .failed(let text): return "Failed: \(text)"
        }
    }

    /// Documents, Documents/turbovaed (where `turbovaed bench` copies artifacts) and the bundle's Models.
    var searchDirectories: [URL] {
        var dirs: [URL] = []
        if let documents = ResultsIO.documentsDirectory() {
            dirs.append(documents)
            dirs.append(documents.appendingPathComponent("turbovaed"))
        }
        if let bundled = Bundle.main.resourceURL?.appendingPathComponent("Models") {
            dirs.append(bundled)
        }
        return dirs
    }

    func refreshModels() {
        models = ModelLoader.discover(in: searchDirectories)
        if selectedModel == nil || !models.contains(where: { $0 == selectedModel }) {
            selectedModel = models.first
        }
    }

    /// Run once at launch when the launch arguments name a model.
    func startFromLaunchArguments() async {
        guard !startedFromArguments else { return }
        startedFromArguments = true
        refreshModels()
        let argv = Array(ProcessInfo.processInfo.arguments.dropFirst())
        let parsed: BenchArguments?
        do {
            parsed = try BenchArguments.parse(argv)
        } catch {
            let text = Self.describe(error)
            status = .failed(text)
            if let documents = ResultsIO.documentsDirectory() {
                ResultsIO.writeError(text, for: documents.appendingPathComponent("turbovaed-bench.json"))
            }
            if argv.contains("-exitWhenDone") {
                exit(2)
            }
            return
        }
        guard let parsed else { return }
        warmup = parsed.warmup
        iterations = parsed.iterations
        if let frames = parsed.streamFrames {
            streamFrames = frames
        }
        streamTrim = parsed.trims.first ?? true
        useAll = parsed.computeUnits.contains(.all)
        useCPUAndNeuralEngine = parsed.computeUnits.contains(.cpuAndNeuralEngine)
        useCPUAndGPU = parsed.computeUnits.contains(.cpuAndGPU)
        useCPUOnly = parsed.computeUnits.contains(.cpuOnly)
        let job = Task { await self.run(parsed) }
        task = job
        await job.value
    }

    /// Run the model picked on screen with the settings on screen.
    func runSelected() {
        let units = selectedComputeUnits
        guard let model = selectedModel, !isRunning, !units.isEmpty else { return }
        var arguments = BenchArguments(model: model.path)
        arguments.computeUnits = units
        arguments.warmup = warmup
        arguments.iterations = iterations
        if selectedIsStreaming {
            arguments.streamFrames = streamFrames
            arguments.trims = [streamTrim]
        }
        let stem = model.deletingPathExtension().lastPathComponent
        arguments.output = "turbovaed-bench-\(stem).json"
        task = Task { await self.run(arguments) }
    }

    func cancel() {
        task?.cancel()
    }

    /// The whole run: results JSON (or `<output>.error`) in Documents; quits after when asked to.
    func run(_ arguments: BenchArguments) async {
        let documents = ResultsIO.documentsDirectory()
        let output = arguments.outputURL(documents: documents)
        ResultsIO.clear(output)
        results = []
        progress = nil
        outputPath = nil
        status = .running("Starting \((arguments.model as NSString).lastPathComponent)")
        UIApplication.shared.isIdleTimerDisabled = true
        var failed = false
        do {
            let configuration = try arguments.configuration(documents: documents, bundle: .main)
            let runner = BenchmarkRunner(configuration: configuration)
            let document = try await runner.run { [weak self] update in
                Task { @MainActor in
                    self?.show(update)
                }
            }
            try ResultsIO.write(document, to: output)
            results = document.results
            outputPath = output.path
            status = .finished("Wrote Documents/\(arguments.output)")
        } catch is CancellationError {
            failed = true
            status = .failed("cancelled")
            ResultsIO.writeError("cancelled", for: output)
        } catch {
            failed = true
            let text = Self.describe(error)
            status = .failed(text)
            ResultsIO.writeError(text, for: output)
        }
        UIApplication.shared.isIdleTimerDisabled = false
        if arguments.exitWhenDone {
            exit(failed ? 1 : 0)
        }
    }

    private func show(_ update: BenchProgress) {
        guard isRunning else { return }
        progress = update
        let step = update.total > 0 ? " \(update.iteration)/\(update.total)" : ""
        status = .running("\(update.computeUnits.shortName): \(update.phase.rawValue)\(step)")
    }

    static func describe(_ error: Error) -> String {
        (error as? LocalizedError)?.errorDescription ?? "\(error)"
    }
}
