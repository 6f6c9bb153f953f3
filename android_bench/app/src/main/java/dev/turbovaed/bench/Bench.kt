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

/**
 * Runs one benchmark: load (timed), first decode (timed), warm-up, counted decodes; returns the record.
 * A streaming artifact (manifest `stream` section) instead streams one clip chunk by chunk ([measureStream]).
 */
class Bench(private val context: Context, private val config: BenchConfig) {
    fun measure(progress: (String) -> Unit): BenchRecord {
        val thermalBefore = DeviceInfo.thermalStatus(context)
        val manifest = ModelManifest.read(config.manifest)
        val wanted = if (config.runtime == "executorch") "executorch" else "onnx"
        if (manifest.target != wanted) {
            throw BenchError("${config.manifest.name} is a ${manifest.target} export; --es runtime ${config.runtime} needs $wanted")
        }
        if (manifest.stream != null) return measureStream(manifest, thermalBefore, progress)
        if (config.streamFrames > 0) {
            throw BenchError("${config.model.name} is a whole-chunk artifact: export it with --stream to stream a clip, or drop --ei stream_frames")
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

    /**
     * One clip streamed right after loading, planned by [StreamSpec.plan]: chunk i feeds latents [k, C, h, w] (a
     * short last chunk padded with its last latent frame), the manifest's controls (v1: first = 1 only for i == 0,
     * trim = first when the clip's decode trims; v2 also start/remaining, per segment) and the states the
     * previous call returned (zeros at each segment start); v2 steps add flush chunks and keep the rows their
     * valid output marks. The first chunk is the first-frame latency (cold_start.first_run_ms), the later ones
     * the steady latency (latency_ms); warm-up/iterations do not apply (as on the host).
     */
    private fun measureStream(manifest: ModelManifest, thermalBefore: String?, progress: (String) -> Unit): BenchRecord {
        val spec = manifest.stream ?: throw BenchError("${config.manifest.name} has no stream section")
        val k = spec.chunkLatentFrames
        val frameNumel = manifest.latentFrameNumel
        val clip = config.latents?.let { readClipLatents(it, manifest) }
            ?: randomLatents((config.streamFrames.takeIf { it > 0 } ?: StreamSpec.DEFAULT_CLIP_LATENT_FRAMES) * frameNumel, seed = 0L)
        val clipFrames = clip.size / frameNumel
        if (config.streamFrames > 0 && clipFrames != config.streamFrames) {
            throw BenchError("latents ${config.latents?.name} hold $clipFrames latent frames, --ei stream_frames says ${config.streamFrames}")
        }
        progress("hashing ${config.model.name}")
        val sha256 = sha256(config.model)

        progress("loading ${config.model.name} (streaming step) with ${config.runtime}")
        val t0 = SystemClock.elapsedRealtimeNanos()
        val runner = Runners.loadStream(config, manifest)
        val loadMs = msSince(t0)
        return runner.use {
            val chunk = FloatArray(k * frameNumel)
            val controls = FloatArray(spec.controls.size)
            val plan = spec.plan(clipFrames, config.trims)
            val chunks = plan.size
            val segments = spec.segments(clipFrames).size
            val times = ArrayList<Double>(chunks)
            var frames = 0
            var shape = LongArray(0)
            val tClip = SystemClock.elapsedRealtimeNanos()
            var firstFrameMs: Double? = null
            for (c in plan) {
                if (c.first) runner.reset() // every segment starts from the initial states
                System.arraycopy(clip, c.start * frameNumel, chunk, 0, c.latentFrames * frameNumel)
                for (slot in c.latentFrames until k) {
                    System.arraycopy(clip, (c.start + c.latentFrames - 1) * frameNumel, chunk, slot * frameNumel, frameNumel)
                }
                for ((i, name) in spec.controls.withIndex()) controls[i] = c.controlValue(name)
                val t = SystemClock.elapsedRealtimeNanos()
                val out = runner.step(chunk, controls)
                times.add(msSince(t))
                shape = out.framesShape
                if (c.index == 0 && (shape.size != 4 || shape[0] != spec.framesPerChunk.toLong() || shape[1] != 3L)) {
                    throw BenchError("frames output has shape ${shape.toList()}, the manifest says [${spec.framesPerChunk}, 3, H, W]")
                }
                // v1: the chunk's planned count; v2 (stream.valid_output): the rows the step marks valid
                val valid = out.valid
                val kept = if (spec.validOutput != null) {
                    StreamSpec.validRows(valid ?: throw BenchError("the step returned no ${spec.validOutput} output"), spec.framesPerChunk)
                } else {
                    c.keptFrames ?: 0
                }
                frames += kept
                if (firstFrameMs == null && kept > 0) firstFrameMs = (SystemClock.elapsedRealtimeNanos() - tClip) / 1e6
                progress("chunk ${c.index + 1}/$chunks: ${"%.1f".format(times.last())} ms, $frames frames")
            }
            val wallS = (SystemClock.elapsedRealtimeNanos() - tClip) / 1e9
            val steady = LatencySummary(if (times.size > 1) times.subList(1, times.size).toList() else times.toList())
            val flags = List(segments) { if (config.trims.size == 1) config.trims[0] else config.trims[it] }
            val skip = "first ${spec.firstChunkSkip} frames of the first chunk"
            val kept = when {
                spec.validOutput != null -> "frames kept where '${spec.validOutput}' > 0.5"
                flags.none { it } -> "trim = 0"
                flags.all { it } -> "trim = 1 ($skip" + (if (segments > 1) " of each segment" else "") + " dropped)"
                else -> "trim per segment ${flags.joinToString(",") { if (it) "1" else "0" }} ($skip of a segment with trim = 1 dropped)"
            }
            val protocol = buildString {
                if (spec.controls != StreamSpec.DEFAULT_CONTROLS) append(", controls ${spec.controls.joinToString(", ")}")
                if (spec.restartAt.isNotEmpty()) {
                    append(", $segments segment${if (segments == 1) "" else "s"} (restart_at ${spec.restartAt.joinToString(", ")}; states reset at each)")
                }
                if (spec.flushChunks > 0) {
                    append(", ${spec.flushChunks} flush chunk${if (spec.flushChunks == 1) "" else "s"} after each segment")
                }
            }
            val notes = buildList {
                add(
                    "streamed $clipFrames latent frames in $chunks chunks of $k (${spec.framesPerChunk} frames each), " +
                        "$kept, ${spec.states.size} state tensors fed back as inputs$protocol; first_run_ms is the first chunk, " +
                        "latency_ms the later chunks, fps at their p50",
                )
                add("peak_memory_bytes is the process peak RSS (VmHWM)")
                if (config.latents == null) add("random N(0,1) latents, seed 0")
                if (runner.runtimeName == "onnxruntime") {
                    add("ONNX Runtime without the CPU memory arena and memory patterns")
                    add("states bound in place (each next state written over its state input: one copy alive)")
                }
                add("API ${Build.VERSION.SDK_INT}")
            }.joinToString("; ")
            BenchRecord(
                label = "student/${runner.runtimeName}-stream",
                device = deviceFacts(),
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
                    latentShape = listOf(1L, manifest.inputShape[1], clipFrames.toLong(), manifest.inputShape[2], manifest.inputShape[3]),
                    outputFrames = frames,
                ),
                warmup = 0,
                iterations = steady.samples.size,
                loadMs = loadMs,
                firstRunMs = times[0],
                latency = steady,
                fps = LatencySummary.fps(spec.framesPerChunk, steady.p50),
                peakMemoryBytes = DeviceInfo.peakMemoryBytes(),
                thermalBefore = thermalBefore,
                thermalAfter = DeviceInfo.thermalStatus(context),
                notes = notes,
                stream = StreamFacts(
                    chunkLatentFrames = k,
                    latentFrames = clipFrames,
                    frames = frames,
                    firstChunkMs = times[0],
                    steady = steady,
                    sustainedFps = if (wallS > 0) frames / wallS else 0.0,
                    firstFrameMs = firstFrameMs,
                    calls = times.size,
                ),
            )
        }
    }

    private fun deviceFacts() = DeviceFacts(
        kind = DeviceInfo.kind(),
        model = Build.MODEL,
        os = "Android",
        osVersion = Build.VERSION.RELEASE,
        cpu = DeviceInfo.cpu(),
        soc = DeviceInfo.soc(),
        cpuCount = Runtime.getRuntime().availableProcessors(),
        memoryBytes = DeviceInfo.totalMemoryBytes(context),
    )

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

        /** A raw little-endian float32 clip [T, C, h, w] of any T (whole latent frames of the manifest's size). */
        fun readClipLatents(file: File, manifest: ModelManifest): FloatArray {
            val frameBytes = manifest.latentFrameNumel * 4L
            if (file.length() == 0L || file.length() % frameBytes != 0L) {
                throw BenchError(
                    "latents ${file.name} has ${file.length()} bytes: not a whole number of float32 latent frames " +
                        "[C, h, w] = ${manifest.inputShape.toList().drop(1)} ($frameBytes bytes each)",
                )
            }
            val n = (file.length() / 4L).toInt()
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
