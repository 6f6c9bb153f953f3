// turbovaed-ios-bench: the same benchmark on a Mac, from the command line.
//   swift run -c release turbovaed-ios-bench -model out/wan-256p.mlpackage -computeUnits all,cpuOnly \
//       -iters 10 -output out/mac-bench.json
// Relative paths are under the current directory. Exit status: 0 ok, 2 bad input or failed run.
import Foundation
import TurboVAEDBench

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.contains("-h") || arguments.contains("--help") {
    print("usage: turbovaed-ios-bench -model PATH [options]\n\(BenchArguments.usage)")
    exit(0)
}

let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
var outputURL: URL? = nil
do {
    guard let parsed = try BenchArguments.parse(arguments) else {
        throw BenchError("-model PATH is required (see --help)")
    }
    outputURL = parsed.outputURL(documents: cwd)
    let configuration = try parsed.configuration(documents: cwd, bundle: nil)
    let runner = BenchmarkRunner(configuration: configuration)
    let document = try await runner.run { update in
        if update.phase == .measuring || update.phase == .streaming, let last = update.lastMs {
            var line = String(format: "%@ %d/%d %.1f ms", update.computeUnits.rawValue, update.iteration,
                              update.total, last)
            if let frames = update.streamedFrames {
                line += " (\(frames) frames streamed)"
            }
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
    }
    let url = parsed.outputURL(documents: cwd)
    try ResultsIO.write(document, to: url)
    for result in document.results {
        print(String(format: "%@: load %.0f ms, first %.0f ms, p50 %.1f ms, %.2f FPS", result.label,
                     result.coldStart.loadMs, result.coldStart.firstRunMs, result.latencyMs.p50, result.fps))
        if let stream = result.stream {
            print(String(format: "  streamed %d latent frames -> %d frames: first chunk %.1f ms, steady p50 %.1f ms, "
                         + "%.2f FPS sustained", stream.latentFrames, stream.frames, stream.firstChunkMs,
                         stream.steadyChunkMs.p50, stream.sustainedFps))
        }
    }
    print("wrote \(url.path)")
} catch {
    let message = (error as? LocalizedError)?.errorDescription ?? "\(error)"
    if let outputURL {
        ResultsIO.writeError(message, for: outputURL)
    }
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    exit(2)
}
