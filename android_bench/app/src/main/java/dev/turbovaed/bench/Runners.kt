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

    /** Every element to [value], in bulk copies of up to [FILL_BLOCK] elements (a 720p state is 0.9 GB). */
    fun fill(value: Float) {
        val n = spec.numel
        val block = minOf(n, FILL_BLOCK)
        var i = 0
        if (isHalf) {
            val shorts = bytes.asShortBuffer() // a view in the buffer's (native) byte order
            val bits = ShortArray(block).also { it.fill(Half.toHalf(value)) }
            while (i < n) {
                val m = minOf(block, n - i)
                shorts.put(bits, 0, m)
                i += m
            }
        } else {
            val values = FloatArray(block).also { it.fill(value) }
            floats.clear()
            while (i < n) {
                val m = minOf(block, n - i)
                floats.put(values, 0, m)
                i += m
            }
            floats.rewind()
        }
    }

    /** An ONNX Runtime tensor over this buffer (no copy: later [put]s show through, and a run's writes to it). */
    fun onnxTensor(env: OrtEnvironment): OnnxTensor =
        if (isHalf) {
            OnnxTensor.createTensor(env, bytes, spec.shape, OnnxJavaType.FLOAT16)
        } else {
            OnnxTensor.createTensor(env, floats, spec.shape)
        }

    companion object {
        /** Elements per bulk copy of [fill]. */
        const val FILL_BLOCK = 1 shl 16
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
 * ONNX Runtime streaming step: named inputs (the manifest's), and each state's `next` output bound in place to
 * that state's own input tensor (a pinned output of `OrtSession.run`, ONNX Runtime 1.16+): the call writes every
 * next state into the buffer it read the state from, so one copy of the states is alive, not two (the default
 * student's fp32 states are 0.9 GB at 720p). This is the host's streaming runner (turbo_vaed/targets/onnx.py
 * `_run_in_place`, IOBinding): one buffer per state, the same for input and output, no ping-pong pair. Safe for
 * the reason the host runner gives: every node that reads a state input runs before the node that writes its
 * next value (the next state is cut from a concatenation of the state with the chunk's new frames). Unlike the
 * host runner it also turns the CPU memory arena off (memory patterns off on both), so the process keeps only
 * the step's working set instead of a growing arena.
 */
class OrtStreamRunner(model: File, private val manifest: ModelManifest, threads: Int, ep: String) : StreamRunner {
    override val runtimeName = "onnxruntime"
    override val runtimeVersion: String = BuildConfig.ONNXRUNTIME_VERSION
    override val delegate: String = if (ep == "xnnpack") "XnnpackExecutionProvider" else "CPUExecutionProvider"

    private val spec: StreamSpec = manifest.stream ?: throw BenchError("${model.name}: the manifest has no stream section")
    private val env: OrtEnvironment = OrtEnvironment.getEnvironment()
    private val options = OrtSession.SessionOptions()
    private val session: OrtSession
    /**
     * The app's own tensors over direct buffers, by input name: latents, the controls and the states. Allocated
     * once per runner: [reset] writes the states' initial values back into the same buffers.
     */
    private val owned: Map<String, Pair<HostBuffer, OnnxTensor>>
    /** Every input by name, the same tensors every call (a state's tensor holds what the next call reads). */
    private val feeds: Map<String, OnnxTensor>
    /**
     * Each state's `next` output -> that state's input tensor, which ONNX Runtime writes the next state into. A
     * Result never owns or closes a pinned output: [close] closes these tensors (they are in [owned]).
     */
    private val pinned: Map<String, OnnxTensor>
    /** The outputs ONNX Runtime allocates each call, frames[, valid]: every manifest output that is not pinned. */
    private val requested: Set<String>
    /** Each state's buffer and its initial value (stream.states[].init). */
    private val initial: List<Pair<HostBuffer, Float>>
    /** A call has written the states since they last held their initial values. */
    private var dirty = false

    init {
        val unbindable = unbindableState()
        if (unbindable != null) {
            options.close()
            throw BenchError(unbindable)
        }
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
        // direct, native-order buffers (allocateDirect: all zeros), each state's sized from its shape and dtype
        owned = manifest.inputs.associate { t -> HostBuffer(t).let { t.name to (it to it.onnxTensor(env)) } }
        feeds = owned.mapValues { it.value.second }
        pinned = spec.states.associate { st -> st.next to owned.getValue(st.name).second }
        requested = manifest.outputs.map { it.name }.filterTo(LinkedHashSet<String>()) { it !in pinned }
        initial = spec.states.map { st -> owned.getValue(st.name).first to checkNotNull(initialValue(st)) }
        initializeStates(fresh = true)
    }

    override fun reset() {
        if (dirty) initializeStates(fresh = false)
    }

    override fun step(latents: FloatArray, controls: FloatArray): StepOutput {
        owned.getValue(manifest.inputName).first.put(latents)
        for ((i, name) in spec.controls.withIndex()) owned.getValue(name).first.fill(controls[i])
        dirty = true // the call overwrites the states, even one that fails part way
        // frames[, valid] are ONNX Runtime's, closed with the result; the next states are already in place
        session.run(feeds, requested, pinned).use { result ->
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
    }

    override fun close() {
        for ((_, tensor) in owned.values) tensor.close() // the states' tensors too: no Result closes a pinned output
        session.close()
        options.close()
    }

    /** Why a state cannot start from its init or take its next value in its own buffer, or null (all can). */
    private fun unbindableState(): String? {
        val outputs = manifest.outputs.associateBy { it.name }
        for (st in spec.states) {
            if (initialValue(st) == null) return "state ${st.name} has init '${st.init}'; this app knows 'zeros'"
            val input = manifest.inputs.first { it.name == st.name } // parseStream checked both exist, same shape
            val next = outputs.getValue(st.next)
            if (next.dtype != input.dtype) {
                return "state ${st.name} is ${input.dtype}, its next ${st.next} ${next.dtype}: one cannot be written over the other"
            }
            if (st.next == manifest.outputs[0].name) return "the frames output ${st.next} is also the next value of state ${st.name}"
        }
        return null
    }

    /** Every state buffer to its initial value; a [fresh] buffer (allocateDirect) already holds zeros. */
    private fun initializeStates(fresh: Boolean) {
        for ((buffer, value) in initial) {
            if (!fresh || value != 0f) buffer.fill(value)
        }
        dirty = false
    }

    /** The value every element of [st] starts from (stream.states[].init), or null for an init this app does not know. */
    private fun initialValue(st: StreamState): Float? = when (st.init) {
        "zeros" -> 0f
        else -> null
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
