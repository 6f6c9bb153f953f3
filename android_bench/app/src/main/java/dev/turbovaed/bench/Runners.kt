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

/** What one streaming call returned: the shape of `frames` and, for a v2 step, its valid output (one per row). */
class StepOutput(val framesShape: LongArray, val valid: FloatArray?)

/**
 * One loaded streaming step (`turbovaed export --stream`): [step] decodes one chunk with the current state
 * tensors and keeps the step's state outputs as the next call's state inputs (no per-model code: every name
 * comes from the manifest's `stream` section).
 */
interface StreamRunner : AutoCloseable {
    val runtimeName: String
    val runtimeVersion: String
    val delegate: String?

    /** Every state back to its initial value (zeros): the next [step] is the first chunk of a new clip or segment. */
    fun reset()

    /**
     * One chunk: [latents] ([k, C, h, w] floats, a short last chunk already padded) and [controls], the values of
     * the manifest's `stream.controls` in that order (v1: first, trim); returns the shape of the `frames` output
     * [rt * k, 3, H, W] and the `stream.valid_output` values when the step has one.
     */
    fun step(latents: FloatArray, controls: FloatArray): StepOutput
}

object Runners {
    /** Loads [model] for [config]'s runtime with [input] ([T, C, h, w] floats) bound as its input. */
    fun load(config: BenchConfig, manifest: ModelManifest, input: FloatArray): DecoderRunner = when (config.runtime) {
        "executorch" -> ExecuTorchRunner(config.model, manifest, input, config.threads)
        "onnxruntime" -> OrtRunner(config.model, manifest, input, config.threads, config.ep)
        else -> throw BenchError("unknown runtime ${config.runtime}")
    }

    /** Loads a streaming step for [config]'s runtime; its states start as zeros. */
    fun loadStream(config: BenchConfig, manifest: ModelManifest): StreamRunner = when (config.runtime) {
        "executorch" -> ExecuTorchStreamRunner(config.model, manifest, config.threads)
        "onnxruntime" -> OrtStreamRunner(config.model, manifest, config.threads, config.ep)
        else -> throw BenchError("unknown runtime ${config.runtime}")
    }
}

/** A tensor the app owns: a direct, native-order buffer that both runtimes read without a copy. */
class HostBuffer(val spec: TensorSpec) {
    val isHalf: Boolean = spec.dtype == "float16"
    val bytes: ByteBuffer = ByteBuffer.allocateDirect(spec.numel * if (isHalf) 2 else 4).order(ByteOrder.nativeOrder())
    val floats: FloatBuffer = bytes.asFloatBuffer()

    init {
        if (spec.dtype != "float32" && !isHalf) {
            throw BenchError("unsupported dtype ${spec.dtype} of ${spec.name} in the manifest")
        }
    }

    /** Copies [values] (exactly numel of them) in. */
    fun put(values: FloatArray) {
        require(values.size == spec.numel) { "${values.size} values for ${spec.name} ${spec.shape.toList()}" }
        if (isHalf) {
            for (i in values.indices) bytes.putShort(2 * i, Half.toHalf(values[i]))
        } else {
            floats.clear()
            floats.put(values)
            floats.rewind()
        }
    }

    fun fill(value: Float) {
        if (isHalf) {
            val bits = Half.toHalf(value)
            for (i in 0 until spec.numel) bytes.putShort(2 * i, bits)
        } else {
            for (i in 0 until spec.numel) floats.put(i, value)
        }
    }

    /** An ONNX Runtime tensor over this buffer (no copy: later [put]s show through). */
    fun onnxTensor(env: OrtEnvironment): OnnxTensor =
        if (isHalf) {
            OnnxTensor.createTensor(env, bytes, spec.shape, OnnxJavaType.FLOAT16)
        } else {
            OnnxTensor.createTensor(env, floats, spec.shape)
        }
}

/**
 * ExecuTorch streaming step: inputs and outputs in the manifest's order (latents, the controls, state0, ...
 * -> frames[, valid], state0_next, ...). ExecuTorch's Java outputs alias the method's planned memory, which the next
 * forward reuses (an input's planned buffer may even hold another output), so each state output is copied into
 * the app's own buffer for that state input before the next call.
 */
class ExecuTorchStreamRunner(model: File, private val manifest: ModelManifest, threads: Int) : StreamRunner {
    override val runtimeName = "executorch"
    override val runtimeVersion: String = BuildConfig.EXECUTORCH_VERSION
    override val delegate: String? = manifest.delegate

    private val spec: StreamSpec = manifest.stream ?: throw BenchError("${model.name}: the manifest has no stream section")
    private val buffers: List<HostBuffer> = manifest.inputs.map { HostBuffer(it) }
    private val indexOf: Map<String, Int> = manifest.inputs.indices.associateBy { manifest.inputs[it].name }
    private val module: Module
    private val values: Array<EValue>
    /** (the state input's buffer, the output index of its `next`) per state. */
    private val carried: List<Pair<HostBuffer, Int>>
    /** The buffer of each control input, in `stream.controls` order. */
    private val controlBuffers: List<HostBuffer> = spec.controls.map { buffers[indexOf.getValue(it)] }
    /** Output index of `stream.valid_output`, or -1. */
    private val validIndex: Int = spec.validOutput?.let { v -> manifest.outputs.indexOfFirst { it.name == v } } ?: -1

    init {
        val half = manifest.inputs.firstOrNull { it.dtype != "float32" }
        if (half != null) {
            throw BenchError("the ExecuTorch Java API has no ${half.dtype} tensors (input ${half.name}): export with float32 inputs")
        }
        if (spec.validOutput != null) {
            if (validIndex < 0) throw BenchError("no output ${spec.validOutput} (stream.valid_output) in the manifest")
            val dtype = manifest.outputs[validIndex].dtype
            if (dtype != "float32") throw BenchError("the ExecuTorch Java API has no $dtype tensors (output ${spec.validOutput}): export with float32 outputs")
        }
        carried = spec.states.map { st ->
            val out = manifest.outputs.indexOfFirst { it.name == st.next }
            if (out < 0) throw BenchError("state ${st.name}: no output ${st.next} in the manifest")
            buffers[indexOf.getValue(st.name)] to out
        }
        module = Module.load(model.absolutePath, Module.LOAD_MODE_MMAP, threads)
        val err = module.loadMethod("forward")
        if (err != 0) {
            module.destroy()
            throw BenchError("ExecuTorch could not load method 'forward' of ${model.name} (error 0x${err.toString(16)})")
        }
        values = Array(buffers.size) { EValue.from(Tensor.fromBlob(buffers[it].floats, buffers[it].spec.shape)) }
    }

    override fun reset() {
        for ((buffer, _) in carried) buffer.fill(0f)
    }

    override fun step(latents: FloatArray, controls: FloatArray): StepOutput {
        buffers[indexOf.getValue(manifest.inputName)].put(latents)
        for ((i, buffer) in controlBuffers.withIndex()) buffer.fill(controls[i])
        val outputs = module.forward(*values)
        if (outputs.size != manifest.outputs.size) {
            throw IllegalStateException("ExecuTorch forward returned ${outputs.size} outputs, the manifest names ${manifest.outputs.size}")
        }
        // copied out before the next forward reuses the planned memory (the valid output too)
        val valid = if (validIndex >= 0) outputs[validIndex].toTensor().getDataAsFloatArray() else null
        for ((buffer, out) in carried) buffer.put(outputs[out].toTensor().getDataAsFloatArray())
        return StepOutput(outputs[0].toTensor().shape(), valid)
    }

    override fun close() = module.destroy()
}

/**
 * ONNX Runtime streaming step: named inputs (the manifest's), and each state's `next` output of the previous
 * call fed straight back as that state (no copy: the previous call's results stay open until the next call has
 * run). Like the host's streaming runner (turbo_vaed/targets/onnx.py), without the CPU memory arena and memory
 * patterns, so the process keeps only the step's working set instead of a growing arena.
 */
class OrtStreamRunner(model: File, private val manifest: ModelManifest, threads: Int, ep: String) : StreamRunner {
    override val runtimeName = "onnxruntime"
    override val runtimeVersion: String = BuildConfig.ONNXRUNTIME_VERSION
    override val delegate: String = if (ep == "xnnpack") "XnnpackExecutionProvider" else "CPUExecutionProvider"

    private val spec: StreamSpec = manifest.stream ?: throw BenchError("${model.name}: the manifest has no stream section")
    private val env: OrtEnvironment = OrtEnvironment.getEnvironment()
    private val options = OrtSession.SessionOptions()
    private val session: OrtSession
    /** The app's own input tensors, by input name: latents, the controls, and the zero initial states. */
    private val owned: Map<String, Pair<HostBuffer, OnnxTensor>>
    private var previous: OrtSession.Result? = null

    init {
        options.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT)
        options.setCPUArenaAllocator(false)
        options.setMemoryPatternOptimization(false)
        if (ep == "xnnpack") {
            options.setIntraOpNumThreads(1)
            options.addConfigEntry("session.intra_op.allow_spinning", "0")
            options.addXnnpack(mapOf("intra_op_num_threads" to maxOf(threads, 1).toString()))
        } else if (threads > 0) {
            options.setIntraOpNumThreads(threads)
        }
        session = env.createSession(model.absolutePath, options)
        val missing = manifest.inputs.map { it.name }.filter { it !in session.inputNames } +
            manifest.outputs.map { it.name }.filter { it !in session.outputNames }
        if (missing.isNotEmpty()) {
            session.close()
            options.close()
            throw BenchError("${model.name} has no ${missing.joinToString(", ")}: the manifest belongs to another artifact")
        }
        owned = manifest.inputs.associate { t -> HostBuffer(t).let { t.name to (it to it.onnxTensor(env)) } }
    }

    override fun reset() {
        previous?.close()
        previous = null
    }

    override fun step(latents: FloatArray, controls: FloatArray): StepOutput {
        owned.getValue(manifest.inputName).first.put(latents)
        for ((i, name) in spec.controls.withIndex()) owned.getValue(name).first.fill(controls[i])
        val feeds = HashMap<String, OnnxTensor>(manifest.inputs.size)
        for (t in manifest.inputs) feeds[t.name] = owned.getValue(t.name).second
        val prev = previous
        if (prev != null) {
            for (st in spec.states) {
                feeds[st.name] = prev.get(st.next).orElseThrow { IllegalStateException("no output ${st.next}") } as OnnxTensor
            }
        }
        val result = session.run(feeds)
        prev?.close()
        previous = result
        val frames = result.get(manifest.outputs[0].name).orElseThrow { IllegalStateException("no frames output") }
        if (frames !is OnnxTensor) throw IllegalStateException("ONNX Runtime output ${manifest.outputs[0].name} is not a tensor")
        val valid = spec.validOutput?.let { name ->
            val v = result.get(name).orElseThrow { IllegalStateException("no output $name (stream.valid_output)") }
            if (v !is OnnxTensor) throw IllegalStateException("ONNX Runtime output $name is not a tensor")
            val buffer = v.floatBuffer ?: throw IllegalStateException("ONNX Runtime output $name is not float32/float16")
            FloatArray(buffer.remaining()).also { buffer.get(it) }
        }
        return StepOutput(frames.info.shape, valid)
    }

    override fun close() {
        previous?.close()
        for ((_, tensor) in owned.values) tensor.close()
        session.close()
        options.close()
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
