import CoreML
import XCTest
@testable import TurboVAEDBench

/// Collects progress updates from the runner's @Sendable callback.
final class ProgressLog: @unchecked Sendable {
    private let lock = NSLock()
    private var updates: [BenchProgress] = []

    func append(_ update: BenchProgress) {
        lock.lock()
        updates.append(update)
        lock.unlock()
    }

    var all: [BenchProgress] {
        lock.lock()
        defer { lock.unlock() }
        return updates
    }
}

/// End to end on the tiny fixture: compile, load, predict, summarise, encode.
final class BenchmarkRunnerTests: XCTestCase {
    func testTinyModelEndToEnd() async throws {
        let configuration = BenchConfiguration(modelURL: Fixtures.tinyModel, computeUnits: [.cpuOnly, .all],
                                               warmup: 1, iterations: 3, latents: .random(seed: 1))
        let log = ProgressLog()
        let document = try await BenchmarkRunner(configuration: configuration).run { log.append($0) }
        XCTAssertEqual(document.schema, "turbovaed.bench/1")
        XCTAssertEqual(document.results.map(\.label), ["student/coreml-cpuOnly", "student/coreml-all"])
        for result in document.results {
            XCTAssertEqual(result.runtime.name, "coreml")
            XCTAssertEqual(result.runtime.precision, "fp16")
            XCTAssertEqual(result.model.family, "wan")
            XCTAssertEqual(result.model.latentShape, [1, 16, 2, 2, 2])
            XCTAssertEqual(result.model.outputFrames, 5)
            XCTAssertEqual(result.model.width, 16)
            XCTAssertEqual(result.settings, BenchSettings(warmup: 1, iterations: 3))
            XCTAssertEqual(result.latencyMs.samples?.count, 3)
            XCTAssertGreaterThan(result.coldStart.loadMs, 0)
            XCTAssertGreaterThan(result.coldStart.firstRunMs, 0)
            XCTAssertLessThanOrEqual(result.latencyMs.min, result.latencyMs.p50)
            XCTAssertLessThanOrEqual(result.latencyMs.p50, result.latencyMs.p90)
            XCTAssertLessThanOrEqual(result.latencyMs.p90, result.latencyMs.max)
            XCTAssertEqual(result.fps, 5 / (result.latencyMs.p50 / 1000), accuracy: 1e-6)
            XCTAssertGreaterThan(try XCTUnwrap(result.peakMemoryBytes), 0)
            XCTAssertNotNil(result.thermal?.before)
            XCTAssertNotNil(result.thermal?.after)
            XCTAssertFalse(result.notes?.contains("not finite") ?? true)
            XCTAssertTrue(result.notes?.contains("on-device compilation") ?? false)
            XCTAssertGreaterThan(try XCTUnwrap(result.model.artifactBytes), 20_000)
        }
        let phases = Set(log.all.map(\.phase))
        XCTAssertTrue(phases.isSuperset(of: [.loading, .firstRun, .warmup, .measuring, .done]))
        let encoded = try ResultsIO.encode(document)
        XCTAssertEqual(try ResultsIO.decode(encoded), document)
    }

    func testComputePlanSummaryWhereAvailable() async throws {
        guard #available(iOS 17.4, macOS 14.4, *) else {
            throw XCTSkip("MLComputePlan needs iOS 17.4 / macOS 14.4")
        }
        let compiled = try await MLModel.compileModel(at: Fixtures.tinyModel)
        defer { try? FileManager.default.removeItem(at: compiled) }
        let summary = await ComputePlanSummary.summarize(compiledURL: compiled, computeUnits: .cpuOnly)
        let plan = try XCTUnwrap(summary)
        XCTAssertFalse(plan.isEmpty)
        XCTAssertFalse(plan.keys.contains("const"))
        XCTAssertEqual(ComputePlanSummary.neuralEngineShare(plan).neuralEngine, 0)  // CPU only
        XCTAssertGreaterThan(ComputePlanSummary.neuralEngineShare(plan).total, 0)
    }

    func testComputePlanDescription() {
        let plan = ["ios17.conv": ["neural_engine": 4], "ios17.gather": ["cpu": 2, "neural_engine": 1]]
        XCTAssertEqual(ComputePlanSummary.neuralEngineShare(plan).neuralEngine, 5)
        XCTAssertEqual(ComputePlanSummary.neuralEngineShare(plan).total, 7)
        XCTAssertEqual(ComputePlanSummary.describe(plan),
                       "compute plan: 5/7 ops preferred on the Neural Engine; off it: ios17.gather x2")
    }

    func testMissingManifestIsAClearError() async throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = dir.appendingPathComponent("lonely.mlpackage")
        try FileManager.default.copyItem(at: Fixtures.tinyModel, to: model)
        do {
            _ = try await BenchmarkRunner(configuration: BenchConfiguration(modelURL: model)).run()
            XCTFail("expected an error")
        } catch let error as BenchError {
            XCTAssertTrue(error.message.contains("lonely.manifest.json"), error.message)
        }
    }
}
