import XCTest
@testable import TurboVAEDBench

final class LatencyStatsTests: XCTestCase {
    func testPercentilesMatchNumpyLinear() {
        // numpy.percentile([1, 2, 3, 4], [50, 90]) -> [2.5, 3.7]
        XCTAssertEqual(LatencyStats.percentile([1, 2, 3, 4], 50), 2.5, accuracy: 1e-12)
        XCTAssertEqual(LatencyStats.percentile([1, 2, 3, 4], 90), 3.7, accuracy: 1e-12)
        XCTAssertEqual(LatencyStats.percentile([7], 90), 7)
        XCTAssertEqual(LatencyStats.percentile([1, 2, 3], 100), 3)
        XCTAssertEqual(LatencyStats.percentile([1, 2, 3], 0), 1)
    }

    func testSummaryKeepsRunOrder() throws {
        let summary = try LatencyStats.summary([5, 1, 3])
        XCTAssertEqual(summary.min, 1)
        XCTAssertEqual(summary.p50, 3)
        XCTAssertEqual(summary.max, 5)
        XCTAssertEqual(summary.mean, 3)
        XCTAssertEqual(summary.samples, [5, 1, 3])
        XCTAssertNil(try LatencyStats.summary([5, 1, 3], keepSamples: false).samples)
    }

    func testSummaryRejectsBadSamples() {
        XCTAssertThrowsError(try LatencyStats.summary([]))
        XCTAssertThrowsError(try LatencyStats.summary([1, .nan]))
        XCTAssertThrowsError(try LatencyStats.summary([-1]))
    }

    func testFPSIsOutputFramesPerSecondAtP50() {
        XCTAssertEqual(LatencyStats.fps(outputFrames: 9, p50Ms: 100), 90, accuracy: 1e-9)
        XCTAssertEqual(LatencyStats.fps(outputFrames: 9, p50Ms: 0), 0)
    }

    func testDurationToMilliseconds() {
        XCTAssertEqual(LatencyStats.milliseconds(.milliseconds(1500)), 1500, accuracy: 1e-9)
        XCTAssertEqual(LatencyStats.milliseconds(.microseconds(250)), 0.25, accuracy: 1e-9)
        XCTAssertEqual(LatencyStats.milliseconds(.seconds(2)), 2000, accuracy: 1e-9)
    }
}
