import Foundation

/// Test fixtures: a tiny Core ML decoder stand-in (Tests/make_fixtures.py) and a sample results file.
enum Fixtures {
    static var directory: URL {
        #if SWIFT_PACKAGE
        let bundle = Bundle.module
        #else
        let bundle = Bundle(for: BundleToken.self)
        #endif
        if let url = bundle.url(forResource: "Fixtures", withExtension: nil) {
            return url
        }
        return bundle.bundleURL.appendingPathComponent("Fixtures")
    }

    /// latents [2, 16, 2, 2] -> frames [5, 3, 16, 16], family wan, fp16 I/O.
    static var tinyModel: URL { directory.appendingPathComponent("tiny.mlpackage") }
    static var tinyManifest: URL { directory.appendingPathComponent("tiny.manifest.json") }
    /// What the app writes for one run with two compute-units settings (also validated by the Python tests).
    static var sampleResults: URL { directory.appendingPathComponent("sample-results.json") }
    /// A streaming step stand-in: latents [2, 16, 2, 2], first, trim, state0 [1, 16, 2, 2] -> frames [8, 3, 16, 16],
    /// state0_next; its manifest has the `stream` section of `turbovaed export --stream`.
    static var tinyStreamModel: URL { directory.appendingPathComponent("tiny-stream.mlpackage") }
    static var tinyStreamManifest: URL { directory.appendingPathComponent("tiny-stream.manifest.json") }
    /// A protocol-v2 streaming step stand-in: latents [2, 16, 2, 2], controls first, start, remaining, state0
    /// -> frames [8, 3, 16, 16], valid [8, 1, 1, 1], state0_next; output lagging one latent frame, one flush chunk,
    /// so a segment of L latent frames keeps 1 + 4 (L - 1) frames.
    static var tinyStreamV2Model: URL { directory.appendingPathComponent("tiny-stream-v2.mlpackage") }
    static var tinyStreamV2Manifest: URL { directory.appendingPathComponent("tiny-stream-v2.manifest.json") }
    /// What the app writes for a streamed clip (one compute-units setting; also validated by the Python tests).
    static var sampleStreamResults: URL { directory.appendingPathComponent("sample-stream-results.json") }

    /// A fresh temporary directory, removed by the caller.
    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("turbovaed-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

private final class BundleToken {}
