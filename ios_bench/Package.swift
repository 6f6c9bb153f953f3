// swift-tools-version:5.10
// TurboVAEDBench: Core ML benchmark harness for exported Turbo-VAED decoders (turbovaed.bench/1 results).
import PackageDescription

let package = Package(
    name: "TurboVAEDBench",
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [
        .library(name: "TurboVAEDBench", targets: ["TurboVAEDBench"]),
        // macOS command line: `swift run -c release turbovaed-ios-bench -model X.mlpackage -output out.json`
        .executable(name: "turbovaed-ios-bench", targets: ["TurboVAEDBenchCLI"]),
    ],
    targets: [
        .target(name: "TurboVAEDBench", path: "Sources/TurboVAEDBench"),
        .executableTarget(
            name: "TurboVAEDBenchCLI",
            dependencies: ["TurboVAEDBench"],
            path: "Sources/TurboVAEDBenchCLI"
        ),
        .testTarget(
            name: "TurboVAEDBenchTests",
            dependencies: ["TurboVAEDBench"],
            path: "Tests/TurboVAEDBenchTests",
            resources: [.copy("Fixtures")]
        ),
    ]
)
