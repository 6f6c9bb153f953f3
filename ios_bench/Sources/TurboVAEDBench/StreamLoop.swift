import CoreML
import Foundation

/// One prediction of the streaming loop: which latent frames it feeds and which flags.
public struct StreamChunk: Equatable, Sendable {
    /// 0-based chunk index.
    public let index: Int
    /// First latent frame of the clip in this chunk.
    public let start: Int
    /// Real latent frames (k, or fewer in a short last chunk that is padded with copies of its last one).
    public let latentFrames: Int
    /// The `first` input: 1 only for the first chunk of a clip.
    public let first: Bool
    /// The `trim` input: `first` when the clip's full decode trims.
    public let trim: Bool
    /// Frames of this chunk's `frames` output the loop keeps.
    public let keptFrames: Int
}

/// The streaming loop over a clip, planned from the manifest alone (no per-model code): chunk starts,
/// padding, flags and kept frames, exactly as turbo_vaed/streaming.py `run_stream`.
public struct StreamPlan: Equatable, Sendable {
    public let spec: StreamSpec
    public let clipLatentFrames: Int
    public let trim: Bool

    public init(spec: StreamSpec, clipLatentFrames: Int, trim: Bool) throws {
        guard clipLatentFrames >= 1 else {
            throw BenchError("a streamed clip needs at least 1 latent frame (got \(clipLatentFrames))")
        }
        self.spec = spec
        self.clipLatentFrames = clipLatentFrames
        self.trim = trim
    }

    public var chunks: [StreamChunk] {
        let k = spec.chunkLatentFrames
        var out: [StreamChunk] = []
        var start = 0
        while start < clipLatentFrames {
            let index = out.count
            let n = Swift.min(k, clipLatentFrames - start)
            out.append(StreamChunk(index: index, start: start, latentFrames: n, first: index == 0,
                                   trim: index == 0 && trim,
                                   keptFrames: spec.keptFrames(index: index, latentFrames: n, trim: trim)))
            start += k
        }
        return out
    }

    /// Frames the whole clip streams into.
    public var totalFrames: Int { spec.totalFrames(clipLatentFrames: clipLatentFrames, trim: trim) }

    /// For chunk slot `slot` (0..<k) of `chunk`: the clip's latent frame it holds (the last real one when padded).
    public func sourceFrame(_ chunk: StreamChunk, slot: Int) -> Int {
        chunk.start + Swift.min(slot, chunk.latentFrames - 1)
    }
}

/// The streaming step's inputs and outputs, checked against the manifest: every manifest input (latents, first,
/// trim, each state) and output (frames, each state's next) by name, with the multiarray type the model declares.
public struct StreamIO {
    public let spec: StreamSpec
    public let latentsName: String
    public let framesName: String
    /// Manifest input name -> the model's declared multiarray type (.float16 unless it declares .float32).
    public let inputTypes: [String: MLMultiArrayDataType]

    public init(model: MLModel, manifest: ArtifactManifest) throws {
        guard let spec = manifest.stream else {
            throw BenchError("the manifest has no stream section: this is a whole-chunk artifact")
        }
        let description = model.modelDescription
        let inputs = description.inputDescriptionsByName
        let outputs = description.outputDescriptionsByName
        var types: [String: MLMultiArrayDataType] = [:]
        for tensor in manifest.inputs {
            guard let input = inputs[tensor.name], input.type == .multiArray,
                  let constraint = input.multiArrayConstraint else {
                throw BenchError("the model has no multiarray input '\(tensor.name)' (it has "
                    + "\(inputs.keys.sorted().joined(separator: ", "))): the manifest belongs to another artifact")
            }
            let modelShape = constraint.shape.map(\.intValue)
            if !modelShape.isEmpty,
               Latents.squeezeLeadingOnes(modelShape) != Latents.squeezeLeadingOnes(tensor.shape) {
                throw BenchError("model input '\(tensor.name)' has shape \(modelShape), the manifest says "
                    + "\(tensor.shape): the manifest belongs to another artifact")
            }
            types[tensor.name] = constraint.dataType == .float32 ? .float32 : .float16
        }
        guard inputs.count == manifest.inputs.count else {
            throw BenchError("the model takes \(inputs.count) inputs, the manifest names \(manifest.inputs.count): "
                + "the manifest belongs to another artifact")
        }
        for tensor in manifest.outputs where outputs[tensor.name] == nil {
            throw BenchError("the model has no output '\(tensor.name)' (it has "
                + "\(outputs.keys.sorted().joined(separator: ", "))): the manifest belongs to another artifact")
        }
        self.spec = spec
        latentsName = manifest.inputName
        framesName = manifest.outputName
        inputTypes = types
    }

    public var latentsType: MLMultiArrayDataType { inputTypes[latentsName] ?? .float16 }
}

/// Carries a streaming step over a clip: one reused latents array filled chunk by chunk, the flags, and the
/// state tensors (zeros at first, then each prediction's `next` outputs fed straight back as inputs).
public final class StreamFeeder {
    public let io: StreamIO
    public let plan: StreamPlan
    private let chunkArray: MLMultiArray
    private let clipBytes: [UInt8]
    private let frameBytes: Int
    private let flags: [String: (on: MLMultiArray, off: MLMultiArray)]
    private let initialStates: [String: MLMultiArray]
    /// The current state inputs, by input name.
    public private(set) var states: [String: MLMultiArray]

    /// `clip`: [T, C, h, w] floats in C order, T = `plan.clipLatentFrames`.
    public init(io: StreamIO, plan: StreamPlan, clip: [Float], chunkShape: [Int]) throws {
        let k = plan.spec.chunkLatentFrames
        guard chunkShape.count == 4, chunkShape[0] == k else {
            throw BenchError("latents input \(chunkShape) is not [\(k), C, h, w]")
        }
        let frameElements = try Latents.elementCount(Array(chunkShape.dropFirst()))
        guard clip.count == plan.clipLatentFrames * frameElements else {
            throw BenchError("\(clip.count) latent values do not fill a clip of \(plan.clipLatentFrames) latent frames "
                + "of \(Array(chunkShape.dropFirst()))")
        }
        let dataType = io.latentsType
        if dataType == .float32 {
            clipBytes = clip.withUnsafeBytes { Array($0) }
            frameBytes = frameElements * MemoryLayout<Float>.stride
        } else {
            let bits = try Latents.floatToHalfBits(clip)
            clipBytes = bits.withUnsafeBytes { Array($0) }
            frameBytes = frameElements * MemoryLayout<UInt16>.stride
        }
        chunkArray = try Latents.makeMultiArray([Float](repeating: 0, count: k * frameElements), shape: chunkShape,
                                                dataType: dataType)
        var flags: [String: (on: MLMultiArray, off: MLMultiArray)] = [:]
        for name in [StreamSpec.firstInput, StreamSpec.trimInput] {
            let flagType = io.inputTypes[name] ?? .float16
            let on = try Latents.makeMultiArray([1], shape: [1, 1, 1, 1], dataType: flagType)
            let off = try Latents.makeMultiArray([0], shape: [1, 1, 1, 1], dataType: flagType)
            flags[name] = (on: on, off: off)
        }
        self.flags = flags
        var zeros: [String: MLMultiArray] = [:]
        for state in plan.spec.states {
            let count = try Latents.elementCount(state.shape)
            zeros[state.name] = try Latents.makeMultiArray([Float](repeating: 0, count: count), shape: state.shape,
                                                           dataType: io.inputTypes[state.name] ?? .float16)
        }
        initialStates = zeros
        states = zeros
        self.io = io
        self.plan = plan
    }

    /// Start a new clip: every state back to its initial value (zeros).
    public func reset() {
        states = initialStates
    }

    /// The inputs of `chunk`: its latents (padded with the last real frame), the flags and the current states.
    public func features(for chunk: StreamChunk) throws -> MLDictionaryFeatureProvider {
        let k = plan.spec.chunkLatentFrames
        let frameBytes = self.frameBytes
        clipBytes.withUnsafeBytes { source in
            chunkArray.withUnsafeMutableBytes { destination, _ in
                for slot in 0..<k {
                    let from = plan.sourceFrame(chunk, slot: slot) * frameBytes
                    destination.baseAddress!.advanced(by: slot * frameBytes)
                        .copyMemory(from: source.baseAddress!.advanced(by: from), byteCount: frameBytes)
                }
            }
        }
        var dictionary: [String: MLFeatureValue] = [io.latentsName: MLFeatureValue(multiArray: chunkArray)]
        if let first = flags[StreamSpec.firstInput] {
            dictionary[StreamSpec.firstInput] = MLFeatureValue(multiArray: chunk.first ? first.on : first.off)
        }
        if let trim = flags[StreamSpec.trimInput] {
            dictionary[StreamSpec.trimInput] = MLFeatureValue(multiArray: chunk.trim ? trim.on : trim.off)
        }
        for (name, value) in states {
            dictionary[name] = MLFeatureValue(multiArray: value)
        }
        return try MLDictionaryFeatureProvider(dictionary: dictionary)
    }

    /// Feed each state's `next` output of `prediction` back as that state's input for the next chunk; returns
    /// the `frames` output.
    @discardableResult
    public func carry(_ prediction: MLFeatureProvider) throws -> MLMultiArray {
        guard let frames = prediction.featureValue(for: io.framesName)?.multiArrayValue else {
            throw BenchError("the prediction has no multiarray output '\(io.framesName)'")
        }
        var next: [String: MLMultiArray] = [:]
        for state in plan.spec.states {
            guard let value = prediction.featureValue(for: state.next)?.multiArrayValue else {
                throw BenchError("the prediction has no state output '\(state.next)' (for input \(state.name))")
            }
            next[state.name] = try Self.conform(value, to: io.inputTypes[state.name] ?? value.dataType)
        }
        states = next
        return frames
    }

    /// `array` as `dataType`: itself when the types agree (turbovaed exports use one I/O type), else a copy.
    static func conform(_ array: MLMultiArray, to dataType: MLMultiArrayDataType) throws -> MLMultiArray {
        if array.dataType == dataType {
            return array
        }
        return try MLMultiArray(concatenating: [array], axis: 0, dataType: dataType)
    }
}

extension Latents {
    /// Latent frames of the clip to stream: `requested`, else a `.npy` file's leading axis, else the default 21.
    public static func clipLatentFrames(_ source: LatentsSource, requested: Int?) throws -> Int {
        if let requested {
            return requested
        }
        guard case .file(let url) = source else { return StreamSpec.defaultClipLatentFrames }
        guard url.pathExtension.lowercased() == "npy" else {
            throw BenchError("raw latents \(url.lastPathComponent) do not say how many latent frames they hold: "
                + "pass -streamFrames N")
        }
        let shape = try parseNpy([UInt8](Data(contentsOf: url))).shape
        if shape.count == 5, shape[0] == 1 {
            return shape[1]
        }
        guard shape.count == 4, shape[0] >= 1 else {
            throw BenchError("\(url.lastPathComponent) has shape \(shape); a clip is [T, C, h, w]")
        }
        return shape[0]
    }

    /// The whole clip [T, C, h, w] as floats: seeded random normal values, or a file's.
    public static func makeClip(_ source: LatentsSource, latentFrames: Int, frameShape: [Int]) throws -> [Float] {
        let shape = [latentFrames] + frameShape
        switch source {
        case .random(let seed):
            return randomNormal(count: try elementCount(shape), seed: seed)
        case .file(let url):
            return try readFile(url, expectedShape: shape)
        }
    }
}
