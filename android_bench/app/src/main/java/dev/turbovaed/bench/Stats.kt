package dev.turbovaed.bench

import kotlin.math.ceil
import kotlin.math.floor

/** min / p50 / p90 / max / mean of per-iteration latencies in ms, as turbo_vaed.bench.stats computes them. */
class LatencySummary(val samples: List<Double>) {
    init {
        require(samples.isNotEmpty()) { "no latency samples" }
    }

    private val sorted = samples.sorted()
    val min: Double get() = sorted.first()
    val max: Double get() = sorted.last()
    val mean: Double get() = samples.sum() / samples.size
    val p50: Double get() = percentile(sorted, 50.0)
    val p90: Double get() = percentile(sorted, 90.0)

    companion object {
        /** Linear interpolation between closest ranks (numpy.percentile's default). */
        fun percentile(sorted: List<Double>, q: Double): Double {
            val pos = (sorted.size - 1) * q / 100.0
            val lo = floor(pos).toInt()
            val hi = ceil(pos).toInt()
            return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo)
        }

        /** Output frames per second at the median latency. */
        fun fps(outputFrames: Int, p50Ms: Double): Double = if (p50Ms > 0) outputFrames / (p50Ms / 1000.0) else 0.0
    }
}
