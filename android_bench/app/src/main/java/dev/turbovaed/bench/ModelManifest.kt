package dev.turbovaed.bench

import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject
import java.io.File

/** One graph input or output of the manifest: name, shape, dtype. */
class TensorSpec(val name: String, val shape: LongArray, val dtype: String) {
    val numel: Int get() = shape.fold(1L) { acc, d -> acc * d }.toInt()
}

/** One state tensor of a streaming step: the input [name], replaced after every call by the output [next]. */
class StreamState(val name: String, val shape: LongArray, val dtype: String, val init: String, val next: String)

/**
 * The manifest's `stream` section (`turbovaed export --stream`): how to carry a streaming step's state.
 *
 * The loop (turbo_vaed/streaming.py `run_stream`): every state starts as zeros; chunk i of a clip of T latent
 * frames feeds `latents` [k, C, h, w] (a short last chunk padded with copies of its last latent frame), the
 * control inputs, and every state; it keeps rows of `frames` and feeds each state's `next` output back as that
 * state.
 *
 * Protocol v1 (no `controls`, `valid_output`, `flush_chunks`, `restart_at`): the controls are `first` = 1 only
 * for i == 0 and `trim` = `first` when the clip's full decode trims; the loop keeps n * frames_per_chunk / k frames
 * of a short last chunk, minus the first `first_chunk_skip` frames of the first chunk when trim = 1.
 *
 * Protocol v2 (optional fields, each absent or null = v1): [controls], the control inputs ([1, 1, 1, 1]) in order,
 * from `first`, `trim` (as v1, per segment), `start` (latent index within the segment of the chunk's first latent
 * frame: chunk index * k) and `remaining` (latent frames of the segment minus start, <= 0 on flush calls);
 * [validOutput], an output [frames_per_chunk, 1, 1, 1] after `frames`: the loop keeps exactly the rows of `frames`
 * whose value is > 0.5 (first_chunk_skip and the short-last-chunk rule do not apply); [flushChunks] more
 * predictions after the last real chunk of a segment (the same latents, `start` still advancing by k), keeping
 * their valid rows (needs a valid output); and [restartAt], latent indices (> 0, strictly increasing) at which the
 * video restarts: the clip is cut at each one below its length into segments decoded as videos of their own,
 * every state back to zeros and the controls counted from the segment start.
 */
class StreamSpec(
    val chunkLatentFrames: Int,
    val framesPerChunk: Int,
    val firstChunkSkip: Int,
    val states: List<StreamState>,
    /** The control inputs fed after `latents`, in order; v1: first, trim. */
    val controls: List<String> = DEFAULT_CONTROLS,
    /** The output marking the rows of `frames` to keep (> 0.5); null: the v1 skip and tail rules. */
    val validOutput: String? = null,
    /** Extra predictions after the last real chunk of each segment; v1: 0. */
    val flushChunks: Int = 0,
    /** Latent indices at which the video restarts (states reset, controls counted from there); empty: none. */
    val restartAt: List<Int> = emptyList(),
) {
    /** Output frames per latent frame (the temporal upsampling factor). */
    val framesPerLatentFrame: Int get() = framesPerChunk / chunkLatentFrames

    /** v1 rule: frames the loop keeps from chunk [index] (of its segment) holding [latentFrames] real latent frames. */
    fun keptFrames(index: Int, latentFrames: Int, trim: Boolean): Int {
        var kept = minOf(latentFrames, chunkLatentFrames) * framesPerLatentFrame
        if (index == 0 && trim) kept -= firstChunkSkip
        return maxOf(kept, 0)
    }

    /**
     * The latent ranges a clip is decoded as: [0, T) cut at every [restartAt] index below T (turbo_vaed/streaming.py
     * `segments`; [21] and 45 latent frames: 0..20, 21..44).
     */
    fun segments(clipLatentFrames: Int): List<IntRange> {
        if (clipLatentFrames <= 0) return emptyList()
        val cuts = listOf(0) + restartAt.filter { it in 1 until clipLatentFrames } + listOf(clipLatentFrames)
        return cuts.zipWithNext().filter { (a, b) -> b > a }.map { (a, b) -> a until b }
    }

    /**
     * Every prediction of a clip, in order: per segment its real chunks, then [flushChunks] flush chunks. Segment i
     * trims as [trims] says: one value per segment (the family's rule at each segment's length), or one for all.
     */
    fun plan(clipLatentFrames: Int, trims: List<Boolean>): List<StreamChunk> {
        val k = chunkLatentFrames
        val out = ArrayList<StreamChunk>()
        val all = segments(clipLatentFrames)
        if (trims.size != 1 && trims.size != all.size) {
            throw BenchError(
                "--es trim has ${trims.size} values; the clip of $clipLatentFrames latent frames has ${all.size} " +
                    "segment${if (all.size == 1) "" else "s"} (stream.restart_at $restartAt): pass one value, or one per segment",
            )
        }
        for ((number, segment) in all.withIndex()) {
            val total = segment.last - segment.first + 1
            val segmentTrim = if (trims.size == 1) trims[0] else trims[number]
            var offset = 0
            var last: StreamChunk? = null
            while (offset < total) {
                val inSegment = offset / k
                val n = minOf(k, total - offset)
                val kept = if (validOutput == null) keptFrames(inSegment, n, segmentTrim) else null
                val chunk = StreamChunk(
                    index = out.size, start = segment.first + offset, latentFrames = n, first = inSegment == 0,
                    trim = inSegment == 0 && segmentTrim, keptFrames = kept, segment = number,
                    segmentStart = segment.first, segmentLatentFrames = total, segmentOffset = offset, flush = false,
                )
                out.add(chunk)
                last = chunk
                offset += k
            }
            val real = last ?: continue
            repeat(maxOf(flushChunks, 0)) {
                out.add(real.copy(index = out.size, first = false, trim = false, keptFrames = null, segmentOffset = offset, flush = true))
                offset += k
            }
        }
        return out
    }

    /** Frames a clip streams into (segments trimmed as [plan] says); null with a [validOutput]: the graph decides. */
    fun totalFrames(clipLatentFrames: Int, trims: List<Boolean>): Int? {
        if (validOutput != null) return null
        return plan(clipLatentFrames, trims).sumOf { it.keptFrames ?: 0 }
    }

    companion object {
        /** The control inputs a streaming step may take after `latents` (manifest `stream.controls`). */
        const val FIRST_INPUT = "first"
        const val TRIM_INPUT = "trim"
        const val START_INPUT = "start"
        const val REMAINING_INPUT = "remaining"
        /** Every control this app can feed (turbo_vaed/streaming.py CONTROLS), and the v1 controls (no `controls`). */
        val KNOWN_CONTROLS = listOf(FIRST_INPUT, TRIM_INPUT, START_INPUT, REMAINING_INPUT)
        val DEFAULT_CONTROLS = listOf(FIRST_INPUT, TRIM_INPUT)
        /** A 5-second Wan clip, the default of `turbovaed bench --stream`. */
        const val DEFAULT_CLIP_LATENT_FRAMES = 21

        /** Rows of a chunk's `frames` its valid output keeps (value > 0.5); [valid] holds one value per row. */
        fun validRows(valid: FloatArray, rows: Int): Int {
            if (valid.size != rows) {
                throw BenchError("the valid output has ${valid.size} values, not one per frame of a chunk ($rows)")
            }
            return valid.count { it > 0.5f }
        }
    }
}

/** One prediction of the streaming loop: which latent frames it feeds, its controls, and what it keeps. */
data class StreamChunk(
    /** 0-based prediction index over the whole clip (flush chunks included). */
    val index: Int,
    /** First latent frame of the clip in this chunk (a flush chunk: that of its segment's last real chunk). */
    val start: Int,
    /** Real latent frames (k, or fewer in a short last chunk padded with copies of its last one). */
    val latentFrames: Int,
    /** The `first` control: the first chunk of a segment (the states start from zeros). */
    val first: Boolean,
    /** The `trim` control: `first` when the segment's full decode trims. */
    val trim: Boolean,
    /** Frames of this chunk's `frames` the loop keeps (v1 rule); null: the step's valid output decides. */
    val keptFrames: Int?,
    val segment: Int,
    /** First latent frame of the clip in this chunk's segment. */
    val segmentStart: Int,
    /** Latent frames of the segment (`remaining` = this - [segmentOffset]). */
    val segmentLatentFrames: Int,
    /** The `start` control: chunk index within the segment * k (flush chunks continue to advance). */
    val segmentOffset: Int,
    /** A flush chunk: the segment's last real chunk fed again. */
    val flush: Boolean,
) {
    /** The value of control input [name] (StreamSpec.KNOWN_CONTROLS) for this chunk. */
    fun controlValue(name: String): Float = when (name) {
        StreamSpec.FIRST_INPUT -> if (first) 1f else 0f
        StreamSpec.TRIM_INPUT -> if (trim) 1f else 0f
        StreamSpec.START_INPUT -> segmentOffset.toFloat()
        StreamSpec.REMAINING_INPUT -> (segmentLatentFrames - segmentOffset).toFloat()
        else -> throw BenchError("unknown control input '$name' (this app feeds ${StreamSpec.KNOWN_CONTROLS.joinToString(", ")})")
    }
}

/** The fields of `<name>.manifest.json` (turbovaed.manifest/2, or /1) the benchmark needs. */
class ModelManifest(
    val name: String,
    val target: String,
    val delegate: String?,
    val preset: String?,
    val family: String,
    val width: Int,
    val height: Int,
    val outputFrames: Int,
    val precision: String,
    val inputName: String,
    /** [T, C, h, w]: latent frames, latent channels, latent height, latent width. */
    val inputShape: LongArray,
    val inputDtype: String,
    val sha256: String?,
    /** Every graph input and output, in graph order (a streaming step has several of each). */
    val inputs: List<TensorSpec> = emptyList(),
    val outputs: List<TensorSpec> = emptyList(),
    /** The `stream` section of a streaming step; null for a whole-chunk artifact. */
    val stream: StreamSpec? = null,
) {
    val latentFrames: Long get() = inputShape[0]
    val latentChannels: Long get() = inputShape[1]

    /** Elements in one input tensor. */
    val inputNumel: Int get() = inputShape.fold(1L) { acc, d -> acc * d }.toInt()

    /** The schema's 5-D latent shape [1, C, T, h, w]. */
    fun latentShape5d(): List<Long> = listOf(1L, inputShape[1], inputShape[0], inputShape[2], inputShape[3])

    /** Elements of one latent frame [C, h, w]. */
    val latentFrameNumel: Int get() = inputNumel / inputShape[0].toInt()

    companion object {
        const val SCHEMA = "turbovaed.manifest/2"
        /** Older exports; read the same way (the fields used here did not change). */
        const val SCHEMA_V1 = "turbovaed.manifest/1"

        fun read(file: File): ModelManifest {
            val text = try {
                file.readText()
            } catch (e: java.io.IOException) {
                throw BenchError("cannot read manifest ${file.path}: ${e.message}")
            }
            return parse(text, file.path)
        }

        fun parse(text: String, source: String = "manifest"): ModelManifest {
            try {
                val m = JSONObject(text)
                val schema = m.optString("schema")
                if (schema != SCHEMA && schema != SCHEMA_V1) throw BenchError("$source is not $SCHEMA (schema '$schema')")
                val input = m.getJSONArray("inputs").getJSONObject(0)
                val shape = longs(input.getJSONArray("shape"))
                if (shape.size != 4 || shape.any { it < 1 }) {
                    throw BenchError("$source: inputs[0].shape must be [T, C, h, w] with positive sizes, got ${shape.toList()}")
                }
                val inputs = tensors(m.getJSONArray("inputs"))
                val outputs = tensors(m.getJSONArray("outputs"))
                val stream = if (m.isNull("stream")) null else parseStream(m.getJSONObject("stream"), inputs, outputs, source)
                return ModelManifest(
                    name = m.getString("name"),
                    target = m.getString("target"),
                    delegate = stringOrNull(m, "delegate"),
                    preset = stringOrNull(m, "preset"),
                    family = m.getString("family"),
                    width = m.getInt("width"),
                    height = m.getInt("height"),
                    outputFrames = m.getInt("output_frames"),
                    precision = m.optString("precision", "fp32"),
                    inputName = input.optString("name", "latents"),
                    inputShape = shape,
                    inputDtype = input.optString("dtype", "float32"),
                    sha256 = stringOrNull(m, "sha256"),
                    inputs = inputs,
                    outputs = outputs,
                    stream = stream,
                )
            } catch (e: JSONException) {
                throw BenchError("$source is not a valid turbovaed manifest: ${e.message}")
            }
        }

        /** org.json's optString turns JSON null into "null"; this keeps it null. */
        fun stringOrNull(obj: JSONObject, key: String): String? = if (obj.isNull(key)) null else obj.getString(key)

        private fun longs(a: JSONArray): LongArray = LongArray(a.length()) { a.getLong(it) }

        private fun tensors(a: JSONArray): List<TensorSpec> = List(a.length()) { i ->
            val t = a.getJSONObject(i)
            TensorSpec(t.getString("name"), longs(t.getJSONArray("shape")), t.optString("dtype", "float32"))
        }

        /** An integer field of the `stream` section, or null when absent or JSON null (1.5 or "2" are errors). */
        private fun intOrNull(obj: JSONObject, key: String, source: String): Int? =
            if (obj.isNull(key)) null else intValue(obj.get(key), "stream.$key", source)

        /** A JSON integer as an Int; [what] names it in the error (1.5, "2" or out of range). */
        private fun intValue(v: Any?, what: String, source: String): Int {
            val n = when (v) {
                is Int -> v.toLong()
                is Long -> v
                else -> throw BenchError("$source: $what must be an integer, got $v")
            }
            if (n < Int.MIN_VALUE || n > Int.MAX_VALUE) throw BenchError("$source: $what $n is out of range")
            return n.toInt()
        }

        /** `stream.restart_at`: a list of latent indices; absent or JSON null: no restart. */
        private fun parseRestartAt(s: JSONObject, source: String): List<Int> {
            if (s.isNull("restart_at")) return emptyList()
            val a = s.optJSONArray("restart_at") ?: throw BenchError("$source: stream.restart_at must be a list of latent indices")
            return List(a.length()) { intValue(a.get(it), "stream.restart_at[$it]", source) }
        }

        /** The `stream` section, checked against the inputs and outputs it names. */
        fun parseStream(s: JSONObject, inputs: List<TensorSpec>, outputs: List<TensorSpec>, source: String): StreamSpec {
            val k = s.getInt("chunk_latent_frames")
            val perChunk = s.getInt("frames_per_chunk")
            val skip = s.getInt("first_chunk_skip")
            val statesJson = s.getJSONArray("states")
            val states = List(statesJson.length()) { i ->
                val st = statesJson.getJSONObject(i)
                StreamState(
                    name = st.getString("name"),
                    shape = longs(st.getJSONArray("shape")),
                    dtype = st.optString("dtype", "float32"),
                    init = st.optString("init", "zeros"),
                    next = st.getString("next"),
                )
            }
            // protocol v2 (each absent or null: v1)
            val controls = if (s.isNull("controls")) {
                StreamSpec.DEFAULT_CONTROLS
            } else {
                val a = s.optJSONArray("controls") ?: throw BenchError("$source: stream.controls must be a list of names")
                List(a.length()) { a.getString(it) }
            }
            val validOutput = stringOrNull(s, "valid_output")
            val flushChunks = intOrNull(s, "flush_chunks", source) ?: 0
            val restartAt = parseRestartAt(s, source)
            if (k < 1 || inputs.isEmpty() || inputs[0].shape[0] != k.toLong()) {
                throw BenchError("$source: stream.chunk_latent_frames $k is not inputs[0].shape[0]")
            }
            if (perChunk < k || perChunk % k != 0 || outputs.isEmpty() || outputs[0].shape[0] != perChunk.toLong()) {
                throw BenchError("$source: stream.frames_per_chunk $perChunk must be a multiple of $k and outputs[0].shape[0]")
            }
            if (skip < 0 || skip > perChunk) throw BenchError("$source: stream.first_chunk_skip $skip is not in 0..$perChunk")
            val byName = inputs.associateBy { it.name }
            val outByName = outputs.associateBy { it.name }
            val seen = HashSet<String>()
            for (control in controls) {
                if (control !in StreamSpec.KNOWN_CONTROLS) {
                    throw BenchError(
                        "$source: stream.controls names '$control', a control this app does not know " +
                            "(it feeds ${StreamSpec.KNOWN_CONTROLS.joinToString(", ")}): update the app",
                    )
                }
                if (!seen.add(control)) throw BenchError("$source: stream.controls lists '$control' twice")
                val input = byName[control]
                    ?: throw BenchError("$source: a streaming step needs the input '$control'; export again with --stream")
                if (!input.shape.contentEquals(longArrayOf(1, 1, 1, 1))) {
                    throw BenchError("$source: control input '$control' has shape ${input.shape.toList()}, not [1, 1, 1, 1]")
                }
            }
            for (st in states) {
                if (st.init != "zeros") throw BenchError("$source: state ${st.name} has init '${st.init}'; this app knows 'zeros'")
                val input = byName[st.name]
                if (input == null || !input.shape.contentEquals(st.shape)) {
                    throw BenchError("$source: state ${st.name} ${st.shape.toList()} is not an input of that shape")
                }
                val output = outByName[st.next]
                if (output == null || !output.shape.contentEquals(st.shape)) {
                    throw BenchError("$source: state ${st.name}'s next '${st.next}' is not an output of shape ${st.shape.toList()}")
                }
            }
            val fed = setOf(inputs[0].name) + controls + states.map { it.name }
            for (t in inputs) {
                if (t.name !in fed) {
                    throw BenchError("$source: input '${t.name}' is neither the latents, a control (stream.controls $controls) nor a state: this app cannot feed it")
                }
            }
            if (validOutput != null) {
                val valid = outByName[validOutput]
                if (valid == null || validOutput == outputs[0].name || states.any { it.next == validOutput }) {
                    throw BenchError(
                        "$source: stream.valid_output '$validOutput' is not an output of its own " +
                            "(outputs: ${outputs.joinToString(", ") { it.name }})",
                    )
                }
                if (valid.shape.isEmpty() || valid.shape[0] != perChunk.toLong() || valid.numel != perChunk) {
                    throw BenchError(
                        "$source: stream.valid_output '$validOutput' has shape ${valid.shape.toList()}, not " +
                            "[$perChunk, 1, 1, 1] (one value per frame of a chunk)",
                    )
                }
            }
            if (flushChunks < 0) throw BenchError("$source: stream.flush_chunks $flushChunks must be >= 0")
            if (flushChunks > 0 && validOutput == null) {
                throw BenchError("$source: stream.flush_chunks $flushChunks needs stream.valid_output (which frames of a flush chunk to keep)")
            }
            if ((listOf(0) + restartAt).zipWithNext().any { (a, b) -> b <= a }) {
                throw BenchError("$source: stream.restart_at $restartAt must be strictly increasing latent indices > 0 ([]: no restart)")
            }
            return StreamSpec(k, perChunk, skip, states, controls, validOutput, flushChunks, restartAt)
        }
    }
}
