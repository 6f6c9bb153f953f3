package dev.turbovaed.bench

import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject
import java.io.File

/** The fields of `<name>.manifest.json` (turbovaed.manifest/1) the benchmark needs. */
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
) {
    val latentFrames: Long get() = inputShape[0]
    val latentChannels: Long get() = inputShape[1]

    /** Elements in one input tensor. */
    val inputNumel: Int get() = inputShape.fold(1L) { acc, d -> acc * d }.toInt()

    /** The schema's 5-D latent shape [1, C, T, h, w]. */
    fun latentShape5d(): List<Long> = listOf(1L, inputShape[1], inputShape[0], inputShape[2], inputShape[3])

    companion object {
        const val SCHEMA = "turbovaed.manifest/1"

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
                if (schema != SCHEMA) throw BenchError("$source is not $SCHEMA (schema '$schema')")
                val input = m.getJSONArray("inputs").getJSONObject(0)
                val shape = longs(input.getJSONArray("shape"))
                if (shape.size != 4 || shape.any { it < 1 }) {
                    throw BenchError("$source: inputs[0].shape must be [T, C, h, w] with positive sizes, got ${shape.toList()}")
                }
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
                )
            } catch (e: JSONException) {
                throw BenchError("$source is not a valid turbovaed manifest: ${e.message}")
            }
        }

        /** org.json's optString turns JSON null into "null"; this keeps it null. */
        fun stringOrNull(obj: JSONObject, key: String): String? = if (obj.isNull(key)) null else obj.getString(key)

        private fun longs(a: JSONArray): LongArray = LongArray(a.length()) { a.getLong(it) }
    }
}
