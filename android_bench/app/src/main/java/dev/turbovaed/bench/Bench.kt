package dev.turbovaed.bench

import android.content.Context
import android.os.Build
import android.os.SystemClock
import java.io.File
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.security.MessageDigest
import java.time.Instant
import java.time.temporal.ChronoUnit
import java.util.Random

/** Runs one benchmark: load (timed), first decode (timed), warm-up, counted decodes; returns the record. */
class Bench(private val context: Context, private val config: BenchConfig) {
    fun measure(progress: (String) -> Unit): BenchRecord {
        val thermalBefore = DeviceInfo.thermalStatus(context)
        val manifest = ModelManifest.read(config.manifest)
        val wanted = if (config.runtime == "executorch") "executorch" else "onnx"
        if (manifest.target != wanted) {
            throw BenchError("${config.manifest.name} is a ${manifest.target} export; --es runtime ${config.runtime} needs $wanted")
        }
        val input = config.latents?.let { readLatents(it, manifest) } ?: randomLatents(manifest.inputNumel, seed = 0L)
        progress("hashing ${config.model.name}")
        val sha256 = sha256(config.model)

        progress("loading ${config.model.name} with ${config.runtime}")
        val t0 = SystemClock.elapsedRealtimeNanos()
        val runner = Runners.load(config, manifest, input)
        val loadMs = msSince(t0)
        return runner.use {
            progress("first decode")
            val t1 = SystemClock.elapsedRealtimeNanos()
            val shape = runner.decode()
            val firstRunMs = msSince(t1)
            if (shape.size != 4 || shape[1] != 3L) {
                throw BenchError("decoder output has shape ${shape.toList()}, expected [F, 3, H, W]")
            }
            for (i in 1..config.warmup) {
                progress("warm-up $i/${config.warmup}")
                runner.decode()
            }
            val samples = ArrayList<Double>(config.iters)
            for (i in 1..config.iters) {
                val t = SystemClock.elapsedRealtimeNanos()
                runner.decode()
                samples.add(msSince(t))
                progress("decode $i/${config.iters}: ${"%.1f".format(samples.last())} ms")
            }
            val latency = LatencySummary(samples)
            val frames = shape[0].toInt()
            val notes = buildList {
                add("peak_memory_bytes is the process peak RSS (VmHWM)")
                if (config.latents == null) add("random N(0,1) latents, seed 0")
                if (frames != manifest.outputFrames) {
                    add("graph made $frames frames, manifest says ${manifest.outputFrames}")
                }
                add("API ${Build.VERSION.SDK_INT}")
            }.joinToString("; ")
            BenchRecord(
                label = "student/${runner.runtimeName}",
                device = DeviceFacts(
                    kind = DeviceInfo.kind(),
                    model = Build.MODEL,
                    os = "Android",
                    osVersion = Build.VERSION.RELEASE,
                    cpu = DeviceInfo.cpu(),
                    soc = DeviceInfo.soc(),
                    cpuCount = Runtime.getRuntime().availableProcessors(),
                    memoryBytes = DeviceInfo.totalMemoryBytes(context),
                ),
                runtime = RuntimeFacts(
                    name = runner.runtimeName,
                    version = runner.runtimeVersion,
                    delegate = runner.delegate,
                    threads = config.threads.takeIf { it > 0 },
                    precision = manifest.precision,
                ),
                model = ModelFacts(
                    family = manifest.family,
                    decoder = "student",
                    artifact = config.model.name,
                    artifactSha256 = sha256,
                    artifactBytes = config.model.length(),
                    preset = manifest.preset,
                    width = shape[3].toInt(),
                    height = shape[2].toInt(),
                    latentShape = manifest.latentShape5d(),
                    outputFrames = frames,
                ),
                warmup = config.warmup,
                iterations = config.iters,
                loadMs = loadMs,
                firstRunMs = firstRunMs,
                latency = latency,
                fps = LatencySummary.fps(frames, latency.p50),
                peakMemoryBytes = DeviceInfo.peakMemoryBytes(),
                thermalBefore = thermalBefore,
                thermalAfter = DeviceInfo.thermalStatus(context),
                notes = notes,
            )
        }
    }

    companion object {
        fun msSince(startNanos: Long): Double = (SystemClock.elapsedRealtimeNanos() - startNanos) / 1e6

        /** ISO-8601 UTC, whole seconds, e.g. 2026-01-31T12:00:00Z. */
        fun utcNow(): String = Instant.now().truncatedTo(ChronoUnit.SECONDS).toString()

        fun randomLatents(n: Int, seed: Long): FloatArray {
            val rng = Random(seed)
            return FloatArray(n) { rng.nextGaussian().toFloat() }
        }

        /** Raw little-endian float32 [T, C, h, w] (what `turbovaed bench --device android --latents` pushes). */
        fun readLatents(file: File, manifest: ModelManifest): FloatArray {
            val n = manifest.inputNumel
            if (file.length() != n * 4L) {
                throw BenchError(
                    "latents ${file.name} has ${file.length()} bytes; shape ${manifest.inputShape.toList()} " +
                        "float32 needs ${n * 4L}",
                )
            }
            val bytes = ByteBuffer.allocate(n * 4).order(ByteOrder.LITTLE_ENDIAN)
            FileInputStream(file).channel.use { ch ->
                while (bytes.hasRemaining()) {
                    if (ch.read(bytes) < 0) throw BenchError("latents ${file.name} ended early")
                }
            }
            bytes.flip()
            val out = FloatArray(n)
            bytes.asFloatBuffer().get(out)
            return out
        }

        fun sha256(file: File): String {
            val md = MessageDigest.getInstance("SHA-256")
            FileInputStream(file).use { input ->
                val buf = ByteArray(1 shl 20)
                while (true) {
                    val n = input.read(buf)
                    if (n < 0) break
                    md.update(buf, 0, n)
                }
            }
            return md.digest().joinToString("") { "%02x".format(it) }
        }
    }
}
