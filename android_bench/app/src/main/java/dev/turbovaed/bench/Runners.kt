package dev.turbovaed.bench

import ai.onnxruntime.OnnxJavaType
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import android.util.Half
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.FloatBuffer

/** One loaded decoder: `decode()` decodes the fixed input once and returns the output shape [F, 3, H, W]. */
interface DecoderRunner : AutoCloseable {
    val runtimeName: String
    val runtimeVersion: String
    val delegate: String?

    fun decode(): LongArray
}

object Runners {
    /** Loads [model] for [config]'s runtime with [input] ([T, C, h, w] floats) bound as its input. */
    fun load(config: BenchConfig, manifest: ModelManifest, input: FloatArray): DecoderRunner = when (config.runtime) {
        "executorch" -> ExecuTorchRunner(config.model, manifest, input, config.threads)
        "onnxruntime" -> OrtRunner(config.model, manifest, input, config.threads, config.ep)
        else -> throw BenchError("unknown runtime ${config.runtime}")
    }
}

/** ExecuTorch `.pte` (XNNPACK delegate) through the org.pytorch.executorch Java bindings. */
class ExecuTorchRunner(model: File, manifest: ModelManifest, input: FloatArray, threads: Int) : DecoderRunner {
    override val runtimeName = "executorch"
    override val runtimeVersion: String = BuildConfig.EXECUTORCH_VERSION
    override val delegate: String? = manifest.delegate

    private val module: Module
    private val inputValue: EValue

    init {
        if (manifest.inputDtype != "float32") {
            throw BenchError(
                "the ExecuTorch Java API has no ${manifest.inputDtype} input tensors: export with float32 inputs",
            )
        }
        // threads = 0 lets ExecuTorch pick (performance cores); Module.load only maps the program,
        // so load the method here to count its init (delegate setup, weight packing) as load time.
        module = Module.load(model.absolutePath, Module.LOAD_MODE_MMAP, threads)
        val err = module.loadMethod("forward")
        if (err != 0) {
            module.destroy()
            throw BenchError("ExecuTorch could not load method 'forward' of ${model.name} (error 0x${err.toString(16)})")
        }
        inputValue = EValue.from(Tensor.fromBlob(input, manifest.inputShape))
    }

    override fun decode(): LongArray {
        val outputs = module.forward(inputValue)
        if (outputs.isEmpty()) throw IllegalStateException("ExecuTorch forward returned no outputs")
        return outputs[0].toTensor().shape()
    }

    override fun close() = module.destroy()
}

/** ONNX Runtime (`.onnx` or `.ort`) on the CPU execution provider, or XNNPACK with `--es ep xnnpack`. */
class OrtRunner(model: File, manifest: ModelManifest, input: FloatArray, threads: Int, ep: String) : DecoderRunner {
    override val runtimeName = "onnxruntime"
    override val runtimeVersion: String = BuildConfig.ONNXRUNTIME_VERSION
    override val delegate: String = if (ep == "xnnpack") "XnnpackExecutionProvider" else "CPUExecutionProvider"

    private val env: OrtEnvironment = OrtEnvironment.getEnvironment()
    private val options = OrtSession.SessionOptions()
    private val session: OrtSession
    private val tensor: OnnxTensor
    private val inputName: String

    init {
        options.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT)
        if (ep == "xnnpack") {
            // XNNPACK brings its own thread pool; ORT's intra-op pool would only spin against it.
            options.setIntraOpNumThreads(1)
            options.addConfigEntry("session.intra_op.allow_spinning", "0")
            options.addXnnpack(mapOf("intra_op_num_threads" to maxOf(threads, 1).toString()))
        } else if (threads > 0) {
            options.setIntraOpNumThreads(threads)
        }
        session = env.createSession(model.absolutePath, options)
        inputName = if (manifest.inputName in session.inputNames) manifest.inputName else session.inputNames.first()
        tensor = when (manifest.inputDtype) {
            "float32" -> OnnxTensor.createTensor(env, FloatBuffer.wrap(input), manifest.inputShape)
            "float16" -> OnnxTensor.createTensor(env, halfBuffer(input), manifest.inputShape, OnnxJavaType.FLOAT16)
            else -> throw BenchError("unsupported input dtype ${manifest.inputDtype} in the manifest")
        }
    }

    override fun decode(): LongArray {
        session.run(mapOf(inputName to tensor)).use { result ->
            val out = result.get(0)
            if (out !is OnnxTensor) throw IllegalStateException("ONNX Runtime output 0 is not a tensor")
            return out.info.shape
        }
    }

    override fun close() {
        tensor.close()
        session.close()
        options.close()
    }

    private fun halfBuffer(values: FloatArray): ByteBuffer {
        val buf = ByteBuffer.allocateDirect(values.size * 2).order(ByteOrder.nativeOrder())
        for (v in values) buf.putShort(Half.toHalf(v))
        buf.rewind()
        return buf
    }
}
