import Foundation

/// Latency summaries computed the way turbo_vaed/bench/stats.py does (numpy's linear percentiles).
public enum LatencyStats {
    /// Linear-interpolation percentile of ascending `sorted` values (numpy.percentile's default).
    public static func percentile(_ sorted: [Double], _ p: Double) -> Double {
        precondition(!sorted.isEmpty, "percentile of no samples")
        if sorted.count == 1 {
            return sorted[0]
        }
        let rank = Swift.min(Swift.max(p, 0), 100) / 100 * Double(sorted.count - 1)
        let lower = Int(rank.rounded(.down))
        let upper = Swift.min(lower + 1, sorted.count - 1)
        let fraction = rank - Double(lower)
        return sorted[lower] + (sorted[upper] - sorted[lower]) * fraction
    }

    /// min / p50 / p90 / max / mean (and the samples, in run order) of per-prediction latencies in ms.
    public static func summary(_ samplesMs: [Double], keepSamples: Bool = true) throws -> LatencySummary {
        guard !samplesMs.isEmpty else {
            throw BenchError("no latency samples: run at least one counted iteration")
        }
        guard samplesMs.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
            throw BenchError("latency samples must be finite and non-negative")
        }
        let sorted = samplesMs.sorted()
        let mean = samplesMs.reduce(0, +) / Double(samplesMs.count)
        return LatencySummary(
            min: sorted[0], p50: percentile(sorted, 50), p90: percentile(sorted, 90),
            max: sorted[sorted.count - 1], mean: mean, samples: keepSamples ? samplesMs : nil
        )
    }

    /// Output frames per second at the median latency (0 when the median is 0).
    public static func fps(outputFrames: Int, p50Ms: Double) -> Double {
        p50Ms > 0 ? Double(outputFrames) / (p50Ms / 1000) : 0
    }

    /// A ContinuousClock duration in milliseconds.
    public static func milliseconds(_ duration: Duration) -> Double {
        let parts = duration.components
        return Double(parts.seconds) * 1000 + Double(parts.attoseconds) / 1e15
    }
}
