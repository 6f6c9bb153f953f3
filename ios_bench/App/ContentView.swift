import SwiftUI
import TurboVAEDBench

/// One screen: model, settings, live numbers while it runs, results when done.
struct ContentView: View {
    @EnvironmentObject private var bench: BenchViewModel

    var body: some View {
        NavigationStack {
            List {
                modelSection
                settingsSection
                liveSection
                resultsSection
            }
            .navigationTitle("TurboVAED Bench")
            .toolbar {
                ToolbarItem(placement: .primaryAction) {
                    if bench.isRunning {
                        Button("Stop") { bench.cancel() }
                    } else {
                        Button("Run") { bench.runSelected() }
                            .disabled(bench.selectedModel == nil || bench.selectedComputeUnits.isEmpty)
                    }
                }
            }
            .refreshable {
                await bench.refreshModels()
            }
        }
    }

    private var modelSection: some View {
        Section("Model") {
            if bench.models.isEmpty {
                Text(verbatim: "Copy NAME.mlpackage and NAME.manifest.json into this app's Documents folder (Finder or the Files app), or run turbovaed bench --device iphone16pro.")
                    .font(.callout)
                    .foregroundStyle(.secondary)
            } else {
                Picker("Model", selection: $bench.selectedModel) {
                    ForEach(bench.models, id: \.self) { url in
                        Text(url.lastPathComponent).tag(Optional(url))
                    }
                }
            }
        }
    }

    private var settingsSection: some View {
        Section("Settings") {
            Toggle(ComputeUnitsOption.all.rawValue, isOn: $bench.useAll)
            Toggle(ComputeUnitsOption.cpuAndNeuralEngine.rawValue, isOn: $bench.useCPUAndNeuralEngine)
            Toggle(ComputeUnitsOption.cpuAndGPU.rawValue, isOn: $bench.useCPUAndGPU)
            Toggle(ComputeUnitsOption.cpuOnly.rawValue, isOn: $bench.useCPUOnly)
            Stepper("Warm-up: \(bench.warmup)", value: $bench.warmup, in: 0...50)
            Stepper("Iterations: \(bench.iterations)", value: $bench.iterations, in: 1...500)
            if bench.selectedIsStreaming {
                Stepper("Stream clip: \(bench.streamFrames) latent frames", value: $bench.streamFrames, in: 1...4096)
                Toggle("Trim first chunk", isOn: $bench.streamTrim)
            }
        }
        .disabled(bench.isRunning)
    }

    private var liveSection: some View {
        Section("Live") {
            LabeledContent("Status", value: bench.statusText)
            if let live = bench.progress {
                LabeledContent("Compute units", value: live.computeUnits.rawValue)
                LabeledContent("Load (incl. compile)", value: Self.milliseconds(live.loadMs))
                LabeledContent("First prediction", value: Self.milliseconds(live.firstRunMs))
                LabeledContent("Last prediction", value: Self.milliseconds(live.lastMs))
                LabeledContent("p50", value: Self.milliseconds(live.p50Ms))
                LabeledContent("FPS (output frames)", value: live.fps.map { String(format: "%.2f", $0) } ?? "-")
                if let streamed = live.streamedFrames {
                    LabeledContent("Frames streamed", value: "\(streamed)")
                }
                LabeledContent("Peak memory", value: Self.megabytes(live.peakMemoryBytes))
                LabeledContent("Thermal state", value: live.thermal)
            }
            if let path = bench.outputPath {
                Text(path).font(.caption2).foregroundStyle(.secondary).textSelection(.enabled)
            }
        }
        .monospacedDigit()
    }

    private var resultsSection: some View {
        Section("Results") {
            ForEach(bench.results, id: \.label) { result in
                VStack(alignment: .leading, spacing: 4) {
                    Text(result.label).font(.headline)
                    Text(String(format: "p50 %.1f ms  p90 %.1f ms  %.2f FPS", result.latencyMs.p50,
                                result.latencyMs.p90, result.fps))
                    Text(String(format: "load %.0f ms  first %.0f ms  peak %@", result.coldStart.loadMs,
                                result.coldStart.firstRunMs,
                                Self.megabytes(result.peakMemoryBytes.map { UInt64($0) })))
                    if let stream = result.stream {
                        Text(String(format: "stream: %d frames, first chunk %.1f ms, steady p50 %.1f ms, %.2f FPS sustained",
                                    stream.frames, stream.firstChunkMs, stream.steadyChunkMs.p50, stream.sustainedFps))
                    }
                    if let notes = result.notes {
                        Text(notes).font(.caption2).foregroundStyle(.secondary)
                    }
                }
                .font(.caption.monospacedDigit())
            }
        }
    }

    static func milliseconds(_ value: Double?) -> String {
        value.map { String(format: "%.1f ms", $0) } ?? "-"
    }

    static func megabytes(_ bytes: UInt64?) -> String {
        bytes.map { String(format: "%.0f MB", Double($0) / 1_048_576) } ?? "-"
    }
}
