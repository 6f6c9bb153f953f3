package dev.turbovaed.bench

import org.json.JSONArray
import org.json.JSONObject
import java.io.File
import java.io.FileOutputStream
import java.io.IOException

/** The `device` block of a result. */
data class DeviceFacts(
    val kind: String,
    val model: String,
    val os: String,
    val osVersion: String,
    val cpu: String?,
    val soc: String?,
    val cpuCount: Int?,
    val memoryBytes: Long?,
)

/** The `runtime` block of a result. */
data class RuntimeFacts(
    val name: String,
    val version: String,
    val delegate: String?,
    val threads: Int?,
    val precision: String,
)

/** The `model` block of a result. */
data class ModelFacts(
    val family: String,
    val decoder: String,
    val artifact: String?,
    val artifactSha256: String?,
    val artifactBytes: Long?,
    val preset: String?,
    val width: Int,
    val height: Int,
    val latentShape: List<Long>,
    val outputFrames: Int,
)

/** The `stream` block of a result: a whole clip decoded chunk by chunk, the state carried between calls. */
data class StreamFacts(
    val chunkLatentFrames: Int,
    val latentFrames: Int,
    val frames: Int,
    /** First-frame latency: the first chunk's call (right after loading). */
    val firstChunkMs: Double,
    /** The later chunks' calls (the first one's when the clip is one chunk). */
    val steady: LatencySummary,
    /** frames / wall time of the whole clip. */
    val sustainedFps: Double,
    /** Wall time from the first call to the first kept frame (a lagging non-causal step: several calls). */
    val firstFrameMs: Double? = null,
    /** Calls for the whole clip, flush chunks included. */
    val calls: Int? = null,
)

/** Everything one benchmark run measured. */
data class BenchRecord(
    val label: String,
    val device: DeviceFacts,
    val runtime: RuntimeFacts,
    val model: ModelFacts,
    val warmup: Int,
    val iterations: Int,
    val loadMs: Double,
    val firstRunMs: Double,
    val latency: LatencySummary,
    val fps: Double,
    val peakMemoryBytes: Long?,
    val thermalBefore: String?,
    val thermalAfter: String?,
    val notes: String?,
    /** A streamed clip (streaming artifacts); null for a whole-chunk run. */
    val stream: StreamFacts? = null,
)

/**
 * Results JSON in the turbovaed.bench/1 schema (turbo_vaed/bench/bench-1.schema.json).
 * One function per schema object; tests/test_android_bench.py checks each function's keys against the schema.
 * Nulls are written as JSONObject.NULL: org.json drops a key whose value is Kotlin null.
 */
object ResultsJson {
    const val SCHEMA = "turbovaed.bench/1"
    const val TOOL_NAME = "android_bench"

    fun resultsDoc(record: BenchRecord, created: String, toolVersion: String): JSONObject = JSONObject()
        .put("schema", SCHEMA)
        .put("created", created)
        .put("tool", toolJson(toolVersion))
        .put("results", JSONArray().put(resultJson(record)))

    fun toolJson(version: String): JSONObject = JSONObject()
        .put("name", TOOL_NAME)
        .put("version", version)

    fun resultJson(r: BenchRecord): JSONObject = JSONObject()
        .put("label", r.label)
        .put("device", deviceJson(r.device))
        .put("runtime", runtimeJson(r.runtime))
        .put("model", modelJson(r.model))
        .put("settings", settingsJson(r.warmup, r.iterations))
        .put("cold_start", coldStartJson(r.loadMs, r.firstRunMs))
        .put("latency_ms", latencyJson(r.latency))
        .put("fps", finite(r.fps))
        .put("peak_memory_bytes", r.peakMemoryBytes ?: JSONObject.NULL)
        .put("thermal", thermalJson(r.thermalBefore, r.thermalAfter))
        .put("compute_plan", JSONObject.NULL)
        .put("notes", r.notes ?: JSONObject.NULL)
        .put("stream", r.stream?.let { streamJson(it) } ?: JSONObject.NULL)

    fun deviceJson(d: DeviceFacts): JSONObject = JSONObject()
        .put("kind", d.kind)
        .put("model", d.model)
        .put("os", d.os)
        .put("os_version", d.osVersion)
        .put("cpu", d.cpu ?: JSONObject.NULL)
        .put("soc", d.soc ?: JSONObject.NULL)
        .put("cpu_count", d.cpuCount ?: JSONObject.NULL)
        .put("memory_bytes", d.memoryBytes ?: JSONObject.NULL)

    fun runtimeJson(rt: RuntimeFacts): JSONObject = JSONObject()
        .put("name", rt.name)
        .put("version", rt.version)
        .put("compute_units", JSONObject.NULL)
        .put("delegate", rt.delegate ?: JSONObject.NULL)
        .put("threads", rt.threads ?: JSONObject.NULL)
        .put("precision", rt.precision)

    fun modelJson(m: ModelFacts): JSONObject = JSONObject()
        .put("family", m.family)
        .put("decoder", m.decoder)
        .put("artifact", m.artifact ?: JSONObject.NULL)
        .put("artifact_sha256", m.artifactSha256 ?: JSONObject.NULL)
        .put("artifact_bytes", m.artifactBytes ?: JSONObject.NULL)
        .put("preset", m.preset ?: JSONObject.NULL)
        .put("width", m.width)
        .put("height", m.height)
        .put("latent_shape", JSONArray(m.latentShape))
        .put("output_frames", m.outputFrames)

    fun settingsJson(warmup: Int, iterations: Int): JSONObject = JSONObject()
        .put("warmup", warmup)
        .put("iterations", iterations)

    fun coldStartJson(loadMs: Double, firstRunMs: Double): JSONObject = JSONObject()
        .put("load_ms", finite(loadMs))
        .put("first_run_ms", finite(firstRunMs))

    fun latencyJson(s: LatencySummary): JSONObject = JSONObject()
        .put("min", finite(s.min))
        .put("p50", finite(s.p50))
        .put("p90", finite(s.p90))
        .put("max", finite(s.max))
        .put("mean", finite(s.mean))
        .put("samples", JSONArray(s.samples.map { finite(it) }))

    fun streamJson(s: StreamFacts): JSONObject = JSONObject()
        .put("chunk_latent_frames", s.chunkLatentFrames)
        .put("latent_frames", s.latentFrames)
        .put("frames", s.frames)
        .put("first_chunk_ms", finite(s.firstChunkMs))
        .put("steady_chunk_ms", steadyChunkJson(s.steady))
        .put("sustained_fps", finite(s.sustainedFps))
        .apply {
            s.firstFrameMs?.let { this.put("first_frame_ms", finite(it)) }
            s.calls?.let { this.put("calls", it) }
        }

    /** The summary of the steady chunks (their samples are in latency_ms). */
    fun steadyChunkJson(s: LatencySummary): JSONObject = JSONObject()
        .put("min", finite(s.min))
        .put("p50", finite(s.p50))
        .put("p90", finite(s.p90))
        .put("max", finite(s.max))
        .put("mean", finite(s.mean))

    fun thermalJson(before: String?, after: String?): Any =
        if (before == null && after == null) {
            JSONObject.NULL
        } else {
            JSONObject()
                .put("before", before ?: JSONObject.NULL)
                .put("after", after ?: JSONObject.NULL)
        }

    /** org.json rejects NaN and infinities; timings are never negative. */
    private fun finite(x: Double): Double = if (x.isFinite() && x >= 0) x else 0.0

    /** Writes [text] to [dir]/[name] through a temp file and a rename, so readers never see half a file. */
    fun writeAtomically(dir: File, name: String, text: String): File {
        if (!dir.isDirectory && !dir.mkdirs()) throw IOException("cannot create $dir")
        val target = File(dir, name)
        val tmp = File(dir, ".$name.tmp")
        try {
            FileOutputStream(tmp).use { out ->
                out.write(text.toByteArray(Charsets.UTF_8))
                out.fd.sync()
            }
            if (!tmp.renameTo(target)) throw IOException("cannot rename $tmp to $target")
        } finally {
            tmp.delete()
        }
        return target
    }
}
