import XCTest
@testable import TurboVAEDBench

final class ResultsEncodingTests: XCTestCase {
    static func sampleResult(peak: Int? = 123_456_789, plan: [String: [String: Int]]? = ["conv": ["neural_engine": 3]])
        -> BenchResult {
        BenchResult(
            label: "student/coreml-all",
            device: BenchDevice(kind: "iphone16pro", model: "iPhone17,1", os: "iOS", osVersion: "18.2.0",
                                cpu: "A18 Pro", soc: "A18 Pro", cpuCount: 6, memoryBytes: 8_000_000_000),
            runtime: BenchRuntime(version: "3402.4.1 (iOS 18.2.0)", computeUnits: "all", precision: "fp16"),
            model: BenchModel(family: "wan", artifact: "wan-256p.mlpackage", artifactSha256: String(repeating: "a", count: 64),
                              artifactBytes: 1000, preset: "256p", width: 256, height: 256,
                              latentShape: [1, 16, 3, 32, 32], outputFrames: 9),
            settings: BenchSettings(warmup: 2, iterations: 3),
            coldStart: ColdStart(loadMs: 812.5, firstRunMs: 40.25),
            latencyMs: LatencySummary(min: 10, p50: 12, p90: 14, max: 15, mean: 12.5, samples: [10, 12, 15]),
            fps: 750, peakMemoryBytes: peak, thermal: ThermalReading(before: "nominal", after: "fair"),
            computePlan: plan, notes: "note"
        )
    }

    private func object(_ value: Any?) throws -> [String: Any] {
        try XCTUnwrap(value as? [String: Any])
    }

    func testEncodedKeysAreTheSchemaKeys() throws {
        let document = BenchDocument(created: "2025-01-01T00:00:00Z", results: [Self.sampleResult()])
        let json = try object(JSONSerialization.jsonObject(with: ResultsIO.encode(document)))
        XCTAssertEqual(Set(json.keys), ["schema", "created", "tool", "results"])
        XCTAssertEqual(json["schema"] as? String, "turbovaed.bench/1")
        XCTAssertEqual(try object(json["tool"])["name"] as? String, "ios_bench")
        let result = try object(try XCTUnwrap(json["results"] as? [Any]).first)
        XCTAssertEqual(Set(result.keys), ["label", "device", "runtime", "model", "settings", "cold_start",
                                          "latency_ms", "fps", "peak_memory_bytes", "thermal", "compute_plan",
                                          "notes"])
        XCTAssertEqual(Set(try object(result["device"]).keys),
                       ["kind", "model", "os", "os_version", "cpu", "soc", "cpu_count", "memory_bytes"])
        XCTAssertEqual(Set(try object(result["runtime"]).keys), ["name", "version", "compute_units", "precision"])
        XCTAssertEqual(Set(try object(result["model"]).keys),
                       ["family", "decoder", "artifact", "artifact_sha256", "artifact_bytes", "preset", "width",
                        "height", "latent_shape", "output_frames"])
        XCTAssertEqual(Set(try object(result["cold_start"]).keys), ["load_ms", "first_run_ms"])
        XCTAssertEqual(Set(try object(result["latency_ms"]).keys), ["min", "p50", "p90", "max", "mean", "samples"])
        XCTAssertEqual(Set(try object(result["settings"]).keys), ["warmup", "iterations"])
        XCTAssertEqual(try object(result["runtime"])["name"] as? String, "coreml")
    }

    func testNilOptionalsAreLeftOut() throws {
        let document = BenchDocument(created: "2025-01-01T00:00:00Z",
                                     results: [Self.sampleResult(peak: nil, plan: nil)])
        let json = try object(JSONSerialization.jsonObject(with: ResultsIO.encode(document)))
        let result = try object(try XCTUnwrap(json["results"] as? [Any]).first)
        XCTAssertNil(result["peak_memory_bytes"])
        XCTAssertNil(result["compute_plan"])
        XCTAssertNil(json["comparisons"])
    }

    func testSampleResultsFileRoundTrips() throws {
        let data = try Data(contentsOf: Fixtures.sampleResults)
        let document = try ResultsIO.decode(data)
        XCTAssertEqual(document.schema, TurboVAEDBench.schemaID)
        XCTAssertEqual(document.tool.name, TurboVAEDBench.toolName)
        XCTAssertEqual(document.results.count, 2)
        let original = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? NSDictionary)
        let again = try XCTUnwrap(JSONSerialization.jsonObject(with: ResultsIO.encode(document)) as? NSDictionary)
        XCTAssertEqual(original, again)
    }

    func testWriteIsAtomicAndClearsStaleError() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let output = dir.appendingPathComponent("sub/results.json")
        ResultsIO.writeError("first run failed\nsecond line", for: output)
        let errorText = try String(contentsOf: ResultsIO.errorURL(for: output), encoding: .utf8)
        XCTAssertEqual(errorText, "first run failed second line\n")
        try ResultsIO.write(BenchDocument(created: "x", results: [Self.sampleResult()]), to: output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: ResultsIO.errorURL(for: output).path))
        XCTAssertEqual(try ResultsIO.decode(Data(contentsOf: output)).results.count, 1)
    }

    func testTimestampIsUTC() {
        XCTAssertEqual(BenchmarkRunner.timestamp(Date(timeIntervalSince1970: 0)), "1970-01-01T00:00:00Z")
    }
}
