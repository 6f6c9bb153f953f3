package dev.turbovaed.bench

import android.app.Activity
import android.content.Intent
import android.os.Bundle
import android.util.Log
import android.view.WindowManager
import android.widget.ScrollView
import android.widget.TextView
import java.io.File
import java.util.concurrent.atomic.AtomicBoolean

/**
 * Entry point for `adb shell am start -n dev.turbovaed.bench/.BenchActivity --es model ... --es runtime ...
 * --ei iters N --ei warmup N --ei threads N --es output NAME.json [--es latents FILE]
 * [--ei stream_frames N --ei trim 0|1]` (the last two for streaming artifacts, `turbovaed export --stream`; with
 * the manifest's `restart_at`, `--es trim 1,0,...` gives one trim flag per segment).
 *
 * The run happens on a background thread; the results JSON (turbovaed.bench/1) is written atomically to
 * getExternalFilesDir(null)/NAME.json, or NAME.json.error (one line) when the run fails, and a marker
 * line is logged under the tag [TAG] for scripts that follow logcat.
 */
class BenchActivity : Activity() {
    private lateinit var status: TextView

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        window.addFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)
        status = TextView(this).apply {
            setPadding(32, 32, 32, 32)
            textSize = 14f
            text = "turbovaed bench"
        }
        setContentView(ScrollView(this).apply { addView(status) })
        if (savedInstanceState == null) start(intent)
    }

    override fun onNewIntent(intent: Intent) {
        super.onNewIntent(intent)
        setIntent(intent)
        start(intent)
    }

    private fun start(intent: Intent?) {
        if (intent == null || !intent.hasExtra(Extra.MODEL)) {
            show("Start me with adb to run a benchmark; see android_bench/README.md.")
            return
        }
        if (!running.compareAndSet(false, true)) {
            Log.w(TAG, "a benchmark is already running; ignoring the new request")
            show("busy: a benchmark is already running")
            return
        }
        val outDir = getExternalFilesDir(null) ?: filesDir
        val worker = Thread({
            try {
                runOnce(intent, outDir)
            } finally {
                running.set(false)
            }
        }, "turbovaed-bench")
        worker.priority = Thread.MAX_PRIORITY
        worker.start()
    }

    private fun runOnce(intent: Intent, outDir: File) {
        val output = try {
            BenchConfig.outputName(intent)
        } catch (e: BenchError) {
            fail(outDir, BenchConfig.DEFAULT_OUTPUT, e.message ?: "bad output name")
            return
        }
        // A stale result from an earlier run must not be mistaken for this one.
        File(outDir, output).delete()
        File(outDir, output + ERROR_SUFFIX).delete()
        try {
            val config = BenchConfig.fromIntent(intent)
            Log.i(TAG, "start: $config")
            val record = Bench(applicationContext, config).measure { line -> show(line) }
            val doc = ResultsJson.resultsDoc(record, Bench.utcNow(), BuildConfig.VERSION_NAME)
            val file = ResultsJson.writeAtomically(outDir, output, doc.toString(2) + "\n")
            val stream = record.stream
            val summary = if (stream == null) {
                "p50 %.1f ms, %.2f FPS, load %.0f ms, first %.0f ms".format(
                    record.latency.p50, record.fps, record.loadMs, record.firstRunMs,
                )
            } else {
                "streamed %d frames: first chunk %.0f ms, steady p50 %.1f ms, %.2f FPS sustained, load %.0f ms".format(
                    stream.frames, stream.firstChunkMs, stream.steady.p50, stream.sustainedFps, record.loadMs,
                )
            }
            Log.i(TAG, "$DONE_MARKER ${file.absolutePath} $summary")
            show("done: $summary\n${file.absolutePath}")
        } catch (e: BenchError) {
            fail(outDir, output, e.message ?: "benchmark failed")
        } catch (e: Throwable) {
            // Runtime errors (a model the runtime rejects, out of memory) end the run the same way.
            Log.e(TAG, "benchmark crashed", e)
            fail(outDir, output, "${e.javaClass.simpleName}: ${e.message}")
        }
    }

    private fun fail(outDir: File, output: String, message: String) {
        val line = message.replace('\n', ' ').trim()
        try {
            ResultsJson.writeAtomically(outDir, output + ERROR_SUFFIX, line + "\n")
        } catch (e: java.io.IOException) {
            Log.e(TAG, "cannot write the error file", e)
        }
        Log.e(TAG, "$FAILED_MARKER $line")
        show("failed: $line")
    }

    private fun show(text: String) {
        runOnUiThread { status.text = text }
    }

    companion object {
        const val TAG = "TurboVAEDBench"
        const val DONE_MARKER = "TURBOVAED_BENCH_DONE"
        const val FAILED_MARKER = "TURBOVAED_BENCH_FAILED"
        const val ERROR_SUFFIX = ".error"
        private val running = AtomicBoolean(false)
    }
}
