package dev.turbovaed.bench

import android.content.Intent
import java.io.File

/** A problem with the run's input (bad extras, missing file, wrong manifest): reported on one line. */
class BenchError(message: String) : Exception(message)

/** Names of the `am start` extras; turbo_vaed/bench/android.py passes the same names. */
object Extra {
    const val MODEL = "model"
    const val RUNTIME = "runtime"
    const val ITERS = "iters"
    const val WARMUP = "warmup"
    const val THREADS = "threads"
    const val OUTPUT = "output"
    const val LATENTS = "latents"
    const val MANIFEST = "manifest"
    const val EP = "ep"
    /** Streaming artifacts: latent frames of the clip to stream (default: the latents file's, else 21). */
    const val STREAM_FRAMES = "stream_frames"
    /**
     * Streaming artifacts: whether the full decode trims its first frames (the `trim` control): `--ei trim 0|1` for
     * every segment, or `--es trim 1,0,...` with one value per segment of the clip cut at the manifest's `restart_at`.
     */
    const val TRIM = "trim"
}

/** What one run was asked to do, parsed from the intent extras. */
data class BenchConfig(
    val model: File,
    val manifest: File,
    val runtime: String,
    val iters: Int,
    val warmup: Int,
    val threads: Int,
    val output: String,
    val latents: File?,
    val ep: String,
    /** Latent frames of the streamed clip; 0 when the extra was not given. */
    val streamFrames: Int = 0,
    /** Whether each segment's full decode trims (the `trim` flag on its first chunk): one per segment, or one for all. */
    val trims: List<Boolean> = listOf(true),
) {
    companion object {
        const val DEFAULT_OUTPUT = "turbovaed-bench.json"
        const val DEFAULT_ITERS = 10
        const val DEFAULT_WARMUP = 2
        val RUNTIMES = listOf("executorch", "onnxruntime")
        val ONNX_EPS = listOf("cpu", "xnnpack")

        /** Results file name from the extras, checked first so even a bad run can report its error. */
        fun outputName(intent: Intent): String {
            val name = intent.getStringExtra(Extra.OUTPUT)?.trim().orEmpty().ifEmpty { DEFAULT_OUTPUT }
            if (name.contains('/') || name.startsWith(".")) {
                throw BenchError("--es output must be a plain file name (it goes in the app's files dir), got '$name'")
            }
            return name
        }

        /** The runtime a model file needs, from its extension; null when unknown. */
        fun runtimeFor(model: File): String? = when (model.extension.lowercase()) {
            "pte" -> "executorch"
            "onnx", "ort" -> "onnxruntime"
            else -> null
        }

        /** `<name>.manifest.json` next to `<name>.<ext>` (the exporter writes it there). */
        fun manifestFor(model: File): File =
            File(model.absoluteFile.parentFile, model.name.substringBeforeLast('.') + ".manifest.json")

        /** `--ei trim 0|1` (every segment) or `--es trim 1,0,...` (one per segment); default 1. */
        fun parseTrims(intent: Intent): List<Boolean> {
            val list = intent.getStringExtra(Extra.TRIM) // null when absent or given with --ei
            if (list != null) {
                return list.split(",").map {
                    when (it.trim()) {
                        "1" -> true
                        "0" -> false
                        else -> throw BenchError("--es trim must be 0 or 1 per segment, comma-separated, got '$list'")
                    }
                }
            }
            val trim = intent.getIntExtra(Extra.TRIM, 1)
            if (trim != 0 && trim != 1) throw BenchError("--ei trim must be 0 or 1, got $trim")
            return listOf(trim == 1)
        }

        fun fromIntent(intent: Intent): BenchConfig {
            val modelPath = intent.getStringExtra(Extra.MODEL)
                ?: throw BenchError("missing --es model /data/local/tmp/turbovaed/<name>.pte|.onnx|.ort")
            val model = File(modelPath)
            if (!model.isFile) throw BenchError("model not found or not readable by the app: $modelPath")
            if (!model.canRead()) throw BenchError("model is not readable by the app: $modelPath (chmod 644 it)")
            val inferred = runtimeFor(model)
                ?: throw BenchError("unknown model type '${model.name}': expected .pte (ExecuTorch) or .onnx/.ort")
            val runtime = intent.getStringExtra(Extra.RUNTIME)?.trim()?.lowercase() ?: inferred
            if (runtime !in RUNTIMES) {
                throw BenchError("unknown --es runtime '$runtime': use ${RUNTIMES.joinToString(" or ")}")
            }
            if (runtime != inferred) throw BenchError("--es runtime $runtime cannot run ${model.name} (needs $inferred)")
            val iters = intent.getIntExtra(Extra.ITERS, DEFAULT_ITERS)
            val warmup = intent.getIntExtra(Extra.WARMUP, DEFAULT_WARMUP)
            val threads = intent.getIntExtra(Extra.THREADS, 0)
            if (iters < 1) throw BenchError("--ei iters must be >= 1, got $iters")
            if (warmup < 0) throw BenchError("--ei warmup must be >= 0, got $warmup")
            if (threads < 0) throw BenchError("--ei threads must be >= 0 (0: runtime default), got $threads")
            val manifest = intent.getStringExtra(Extra.MANIFEST)?.let { File(it) } ?: manifestFor(model)
            if (!manifest.isFile) {
                throw BenchError("manifest not found: ${manifest.path}; push <name>.manifest.json next to the model")
            }
            val latents = intent.getStringExtra(Extra.LATENTS)?.let { File(it) }
            if (latents != null && !latents.isFile) throw BenchError("latents file not found: ${latents.path}")
            val ep = intent.getStringExtra(Extra.EP)?.trim()?.lowercase() ?: "cpu"
            if (ep !in ONNX_EPS) throw BenchError("unknown --es ep '$ep': use ${ONNX_EPS.joinToString(" or ")}")
            val streamFrames = intent.getIntExtra(Extra.STREAM_FRAMES, 0)
            if (streamFrames < 0) throw BenchError("--ei stream_frames must be >= 1, got $streamFrames")
            val trims = parseTrims(intent)
            return BenchConfig(
                model = model,
                manifest = manifest,
                runtime = runtime,
                iters = iters,
                warmup = warmup,
                threads = threads,
                output = outputName(intent),
                latents = latents,
                ep = ep,
                streamFrames = streamFrames,
                trims = trims,
            )
        }
    }
}
