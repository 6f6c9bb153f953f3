import XCTest
@testable import TurboVAEDBench

final class ArgumentsTests: XCTestCase {
    func testNoModelMeansInteractive() throws {
        XCTAssertNil(try BenchArguments.parse([]))
        XCTAssertNil(try BenchArguments.parse(["-NSDocumentRevisionsDebugMode", "YES"]))
    }

    func testParsesEveryOption() throws {
        let parsed = try XCTUnwrap(BenchArguments.parse([
            "-NSDocumentRevisionsDebugMode", "YES",
            "-model", "turbovaed/wan-256p.mlpackage", "-computeUnits", "all,CPU_AND_NE,cpuOnly,all",
            "-warmup", "0", "-iters", "25", "-latents", "turbovaed/z.npy", "-seed", "42",
            "-output", "turbovaed/results-1.json", "-deviceKind", "iphone16pro", "-computePlan", "NO",
            "--samples", "false", "-exitWhenDone", "YES",
        ]))
        XCTAssertEqual(parsed.model, "turbovaed/wan-256p.mlpackage")
        XCTAssertEqual(parsed.computeUnits, [.all, .cpuAndNeuralEngine, .cpuOnly])
        XCTAssertEqual(parsed.warmup, 0)
        XCTAssertEqual(parsed.iterations, 25)
        XCTAssertEqual(parsed.latents, "turbovaed/z.npy")
        XCTAssertEqual(parsed.seed, 42)
        XCTAssertEqual(parsed.output, "turbovaed/results-1.json")
        XCTAssertEqual(parsed.deviceKind, "iphone16pro")
        XCTAssertFalse(parsed.computePlan)
        XCTAssertFalse(parsed.keepSamples)
        XCTAssertTrue(parsed.exitWhenDone)
    }

    func testDefaults() throws {
        let parsed = try XCTUnwrap(BenchArguments.parse(["-model", "m.mlpackage"]))
        XCTAssertEqual(parsed.computeUnits, [.all])
        XCTAssertEqual(parsed.warmup, 2)
        XCTAssertEqual(parsed.iterations, 10)
        XCTAssertNil(parsed.latents)
        XCTAssertTrue(parsed.computePlan)
        XCTAssertFalse(parsed.exitWhenDone)
        let docs = URL(fileURLWithPath: "/tmp/docs")
        XCTAssertEqual(parsed.outputURL(documents: docs).path, "/tmp/docs/turbovaed-bench.json")
    }

    func testBadValuesAreErrors() {
        XCTAssertThrowsError(try BenchArguments.parse(["-model", "m", "-iters", "0"]))
        XCTAssertThrowsError(try BenchArguments.parse(["-model", "m", "-warmup", "-1"]))
        XCTAssertThrowsError(try BenchArguments.parse(["-model", "m", "-computeUnits", "npu"]))
        XCTAssertThrowsError(try BenchArguments.parse(["-model", "m", "-deviceKind", "android"]))
        XCTAssertThrowsError(try BenchArguments.parse(["-model", "m", "-exitWhenDone", "maybe"]))
        XCTAssertThrowsError(try BenchArguments.parse(["-model"]))
    }

    func testComputeUnitsNames() throws {
        XCTAssertEqual(ComputeUnitsOption.allCases.map(\.rawValue), ["all", "cpuAndNeuralEngine", "cpuAndGPU", "cpuOnly"])
        XCTAssertEqual(try ComputeUnitsOption.parse("CPU_ONLY"), .cpuOnly)
        XCTAssertEqual(ComputeUnitsOption.cpuAndGPU.mlComputeUnits, .cpuAndGPU)
        XCTAssertThrowsError(try ComputeUnitsOption.parseList(" , "))
    }

    func testConfigurationResolvesPathsUnderDocuments() throws {
        let docs = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: docs) }
        let models = docs.appendingPathComponent("turbovaed")
        try FileManager.default.createDirectory(at: models, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Fixtures.tinyModel, to: models.appendingPathComponent("tiny.mlpackage"))
        var arguments = BenchArguments(model: "turbovaed/tiny.mlpackage")
        arguments.seed = 3
        let configuration = try arguments.configuration(documents: docs, bundle: nil)
        XCTAssertEqual(configuration.modelURL.lastPathComponent, "tiny.mlpackage")
        XCTAssertEqual(configuration.latents, .random(seed: 3))
        arguments.latents = "turbovaed/missing.npy"
        XCTAssertThrowsError(try arguments.configuration(documents: docs, bundle: nil))
        XCTAssertThrowsError(try BenchArguments(model: "nope.mlpackage").configuration(documents: docs, bundle: nil))
    }
}
