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
 * frames feeds `latents` [k, C, h, w] (a short last chunk padded with copies of its last latent frame),
 * `first` = 1 only for i == 0, `trim` = `first` when the clip's full decode trims, and every state; it keeps
 * `frames` (n * frames_per_chunk / k of a short last chunk, minus the first `first_chunk_skip` frames of the
 * first chunk when trim = 1) and feeds each state's `next` output back as that state.
 */
class StreamSpec(
    val chunkLatentFrames: Int,
    val framesPerChunk: Int,
    val firstChunkSkip: Int,
    val states: List<StreamState>,
) {
    /** Output frames per latent frame (the temporal upsampling factor). */
    val framesPerLatentFrame: Int get() = framesPerChunk / chunkLatentFrames

    /** Frames the loop keeps from chunk [index] holding [latentFrames] real latent frames. */
    fun keptFrames(index: Int, latentFrames: Int, trim: Boolean): Int {
        var kept = minOf(latentFrames, chunkLatentFrames) * framesPerLatentFrame
        if (index == 0 && trim) kept -= firstChunkSkip
        return maxOf(kept, 0)
    }

    /** Frames a clip of [clipLatentFrames] latent frames streams into. */
    fun totalFrames(clipLatentFrames: Int, trim: Boolean): Int {
        var total = 0
        var start = 0
        while (start < clipLatentFrames) {
            total += keptFrames(start / chunkLatentFrames, minOf(chunkLatentFrames, clipLatentFrames - start), trim)
            start += chunkLatentFrames
        }
        return total
    }

    companion object {
        const val FIRST_INPUT = "first"
        const val TRIM_INPUT = "trim"
        /** A 5-second Wan clip, the default of `turbovaed bench --stream`. */
        const val DEFAULT_CLIP_LATENT_FRAMES = 21
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
            if (k < 1 || inputs.isEmpty() || inputs[0].shape[0] != k.toLong()) {
                throw BenchError("$source: stream.chunk_latent_frames $k is not inputs[0].shape[0]")
            }
            if (perChunk < k || perChunk % k != 0 || outputs.isEmpty() || outputs[0].shape[0] != perChunk.toLong()) {
                throw BenchError("$source: stream.frames_per_chunk $perChunk must be a multiple of $k and outputs[0].shape[0]")
            }
            if (skip < 0 || skip > perChunk) throw BenchError("$source: stream.first_chunk_skip $skip is not in 0..$perChunk")
            val byName = inputs.associateBy { it.name }
            val outByName = outputs.associateBy { it.name }
            for (flag in listOf(StreamSpec.FIRST_INPUT, StreamSpec.TRIM_INPUT)) {
                if (flag !in byName) throw BenchError("$source: a streaming step needs the input '$flag'; export again with --stream")
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
            return StreamSpec(k, perChunk, skip, states)
        }
    }
}
