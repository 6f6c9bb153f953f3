import CoreML
import XCTest
@testable import TurboVAEDBench

/// A model loaded and an input ready, so `measure` times predictions only.
struct PreparedPrediction {
    let loaded: LoadedModel
    let features: MLFeatureProvider

    static func prepare(_ modelURL: URL, units: ComputeUnitsOption) async throws -> PreparedPrediction {
        let manifest = try ArtifactManifest.load(forModel: modelURL)
        let loaded = try await ModelLoader.load(modelURL, computeUnits: units)
        let io = try ModelIO(model: loaded.model, manifest: manifest)
        let input = try Latents.makeInput(.random(seed: 0), shape: manifest.inputShape, dataType: io.inputDataType)
        let features = try MLDictionaryFeatureProvider(dictionary: [io.inputName: MLFeatureValue(multiArray: input)])
        let prepared = PreparedPrediction(loaded: loaded, features: features)
        _ = try prepared.predict()  // the cold first prediction is not part of the measurement
        return prepared
    }

    func predict() throws -> MLFeatureProvider {
        try autoreleasepool {
            try loaded.model.prediction(from: features)
        }
    }

    static var options: XCTMeasureOptions {
        let options = XCTMeasureOptions()
        options.iterationCount = 5
        return options
    }
}

/// Warm prediction time and memory of the tiny fixture (runs everywhere `swift test` does).
final class TinyModelPerformanceTests: XCTestCase {
    private var prepared: PreparedPrediction?

    override func setUp() async throws {
        prepared = try await PreparedPrediction.prepare(Fixtures.tinyModel, units: .all)
    }

    override func tearDown() {
        if let prepared {
            ModelLoader.cleanUp(prepared.loaded)
        }
        prepared = nil
    }

    func testPredictionPerformance() throws {
        let prepared = try XCTUnwrap(prepared)
        measure(metrics: [XCTClockMetric(), XCTMemoryMetric()], options: PreparedPrediction.options) {
            XCTAssertNoThrow(try prepared.predict())
        }
    }
}

/// A real exported artifact: `TURBOVAED_MODEL=/path/NAME.mlpackage [TURBOVAED_COMPUTE_UNITS=cpuAndNeuralEngine]
/// swift test --filter ArtifactPerformanceTests` (or the same environment in the Xcode scheme's Test action).
final class ArtifactPerformanceTests: XCTestCase {
    private var prepared: PreparedPrediction?

    override func setUp() async throws {
        let environment = ProcessInfo.processInfo.environment
        guard let path = environment["TURBOVAED_MODEL"], !path.isEmpty else {
            throw XCTSkip("set TURBOVAED_MODEL to an exported .mlpackage (with its manifest) to time it")
        }
        let units = try ComputeUnitsOption.parse(environment["TURBOVAED_COMPUTE_UNITS"] ?? "all")
        prepared = try await PreparedPrediction.prepare(URL(fileURLWithPath: path), units: units)
    }

    override func tearDown() {
        if let prepared {
            ModelLoader.cleanUp(prepared.loaded)
        }
        prepared = nil
    }

    func testPredictionPerformance() throws {
        let prepared = try XCTUnwrap(prepared)
        measure(metrics: [XCTClockMetric(), XCTMemoryMetric()], options: PreparedPrediction.options) {
            XCTAssertNoThrow(try prepared.predict())
        }
    }
}

/// Making the input (random normal + float16 conversion) for a 720p wan chunk stays cheap.
final class LatentPreparationPerformanceTests: XCTestCase {
    func testMakeInputPerformance() {
        let shape = [3, 16, 90, 160]
        measure(metrics: [XCTClockMetric()], options: PreparedPrediction.options) {
            XCTAssertNoThrow(try Latents.makeInput(.random(seed: 1), shape: shape))
        }
    }
}
