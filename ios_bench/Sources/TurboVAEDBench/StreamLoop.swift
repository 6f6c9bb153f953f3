import CoreML
import Foundation

/// One prediction of the streaming loop: which latent frames it feeds, its controls, and what it keeps.
public struct StreamChunk: Equatable, Sendable {
    /// 0-based prediction index over the whole clip (flush chunks included).
    public let index: Int
    /// First latent frame of the clip in this chunk (a flush chunk: that of its segment's last real chunk).
    public let start: Int
    /// Real latent frames (k, or fewer in a short last chunk that is padded with copies of its last one).
    public let latentFrames: Int
    /// The `first` control: 1 only for the first chunk of a segment.
    public let first: Bool
    /// The `trim` control: `first` when the segment's full decode trims.
    public let trim: Bool
    /// Frames of this chunk's `frames` output the loop keeps (v1 rule); nil: the step's valid output decides.
    public let keptFrames: Int?
    /// 0-based segment (the clip cut at `restart_at`; a clip without restarts is one segment).
    public let segment: Int
    /// First latent frame of the clip in this chunk's segment.
    public let segmentStart: Int
    /// Latent frames of the segment (`remaining` = this - `segmentOffset`).
    public let segmentLatentFrames: Int
    /// The `start` control: latent index, within the segment, of the chunk's first latent frame (chunk index
    /// within the segment * k; flush chunks continue to advance).
    public let segmentOffset: Int
    /// A flush chunk (`flush_chunks`): the segment's last real chunk fed again.
    public let flush: Bool

    public init(index: Int, start: Int, latentFrames: Int, first: Bool, trim: Bool, keptFrames: Int?,
                segment: Int = 0, segmentStart: Int = 0, segmentLatentFrames: Int, segmentOffset: Int,
                flush: Bool = false) {
        self.index = index
        self.start = start
        self.latentFrames = latentFrames
        self.first = first
        self.trim = trim
        self.keptFrames = keptFrames
        self.segment = segment
        self.segmentStart = segmentStart
        self.segmentLatentFrames = segmentLatentFrames
        self.segmentOffset = segmentOffset
        self.flush = flush
    }

    /// The value of control input `name` (StreamSpec.knownControls) for this chunk; nil for an unknown name.
    public func controlValue(_ name: String) -> Float? {
        switch name {
        case StreamSpec.firstInput: return first ? 1 : 0
        case StreamSpec.trimInput: return trim ? 1 : 0
        case StreamSpec.startInput: return Float(segmentOffset)
        case StreamSpec.remainingInput: return Float(segmentLatentFrames - segmentOffset)
        default: return nil
        }
    }
}

/// The streaming loop over a clip, planned from the manifest alone (no per-model code): segments, chunk starts,
/// padding, flush chunks, controls and kept frames, exactly as turbo_vaed/streaming.py `run_stream`.
public struct StreamPlan: Equatable, Sendable {
    public let spec: StreamSpec
    public let clipLatentFrames: Int
    /// Whether the full decode of each segment trims (the `trim` control on its first chunk; the app's -trim):
    /// one value per segment, or one for every segment. The family's rule is per length (cogvideox: odd lengths
    /// trim), and segments cut at `restart_at` may differ in length.
    public let trims: [Bool]
    /// Latent ranges decoded independently (the clip cut at `restart_at`), or the whole clip.
    public let segments: [Range<Int>]

    public init(spec: StreamSpec, clipLatentFrames: Int, trims: [Bool]) throws {
        guard clipLatentFrames >= 1 else {
            throw BenchError("a streamed clip needs at least 1 latent frame (got \(clipLatentFrames))")
        }
        let segments = spec.segments(clipLatentFrames: clipLatentFrames)
        guard trims.count == 1 || trims.count == segments.count else {
            throw BenchError("-trim has \(trims.count) values; the clip of \(clipLatentFrames) latent frames has "
                + "\(segments.count) segment\(segments.count == 1 ? "" : "s") (stream.restart_at \(spec.restartAt)): "
                + "pass one value, or one per segment")
        }
        self.spec = spec
        self.clipLatentFrames = clipLatentFrames
        self.trims = trims
        self.segments = segments
    }

    /// One trim flag for the whole clip (every segment).
    public init(spec: StreamSpec, clipLatentFrames: Int, trim: Bool) throws {
        try self.init(spec: spec, clipLatentFrames: clipLatentFrames, trims: [trim])
    }

    /// Whether segment `number` trims: `trims[number]`, or the one value given for every segment.
    public func segmentTrims(_ number: Int) -> Bool {
        trims.count == 1 ? trims[0] : trims[number]
    }

    /// Every prediction, in order: per segment its real chunks, then `flush_chunks` flush chunks.
    public var chunks: [StreamChunk] {
        let k = spec.chunkLatentFrames
        var out: [StreamChunk] = []
        let all = segments
        for (segmentIndex, segment) in all.enumerated() {
            let total = segment.count
            let segmentTrim = segmentTrims(segmentIndex)
            var offset = 0
            var last: StreamChunk?
            while offset < total {
                let inSegment = offset / k
                let n = Swift.min(k, total - offset)
                let kept = spec.validOutput == nil
                    ? spec.keptFrames(index: inSegment, latentFrames: n, trim: segmentTrim) : nil
                let chunk = StreamChunk(index: out.count, start: segment.lowerBound + offset, latentFrames: n,
                                        first: inSegment == 0, trim: inSegment == 0 && segmentTrim, keptFrames: kept,
                                        segment: segmentIndex, segmentStart: segment.lowerBound,
                                        segmentLatentFrames: total, segmentOffset: offset)
                out.append(chunk)
                last = chunk
                offset += k
            }
            guard let last else { continue }
            for _ in 0..<Swift.max(spec.flushChunks, 0) {
                out.append(StreamChunk(index: out.count, start: last.start, latentFrames: last.latentFrames,
                                       first: false, trim: false, keptFrames: nil, segment: segmentIndex,
                                       segmentStart: segment.lowerBound, segmentLatentFrames: total,
                                       segmentOffset: offset, flush: true))
                offset += k
            }
        }
        return out
    }

    /// Frames the whole clip streams into (the v1 counts); nil when the step's valid output decides (known after
    /// the run).
    public var totalFrames: Int? {
        spec.validOutput == nil ? chunks.compactMap(\.keptFrames).reduce(0, +) : nil
    }

    /// For chunk slot `slot` (0..<k) of `chunk`: the clip's latent frame it holds (the last real one when padded).
    public func sourceFrame(_ chunk: StreamChunk, slot: Int) -> Int {
        chunk.start + Swift.min(slot, chunk.latentFrames - 1)
    }
}

/// The streaming step's inputs and outputs, checked against the manifest: every manifest input (latents, each
/// control, each state) and output (frames, the valid output, each state's next) by name, with the multiarray type
/// the model declares.
public struct StreamIO {
    public let spec: StreamSpec
    public let latentsName: String
    public let framesName: String
    /// The output marking the rows of `frames` to keep (manifest `stream.valid_output`), or nil.
    public let validName: String?
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
        validName = spec.validOutput
        inputTypes = types
    }

    public var latentsType: MLMultiArrayDataType { inputTypes[latentsName] ?? .float16 }
}

/// Carries a streaming step over a clip: one reused latents array filled chunk by chunk, the control inputs, and
/// the state tensors (zeros at the start of every segment, then each prediction's `next` outputs fed straight back
/// as inputs).
public final class StreamFeeder {
    public let io: StreamIO
    public let plan: StreamPlan
    private let chunkArray: MLMultiArray
    private let clipBytes: [UInt8]
    private let frameBytes: Int
    /// Control input name -> its shape and the multiarray type the model declares.
    private let controls: [(name: String, shape: [Int], type: MLMultiArrayDataType)]
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
        controls = plan.spec.controls.map { name in
            (name: name, shape: [1, 1, 1, 1], type: io.inputTypes[name] ?? .float16)
        }
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

    /// Start a new clip or segment: every state back to its initial value (zeros).
    public func reset() {
        states = initialStates
    }

    /// The inputs of `chunk`: its latents (padded with the last real frame), each control by name and the current
    /// states. The first chunk of a segment starts from the initial states (`restart_at`: segments are decoded
    /// independently).
    public func features(for chunk: StreamChunk) throws -> MLDictionaryFeatureProvider {
        if chunk.first {
            reset()
        }
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
        for control in controls {
            guard let value = chunk.controlValue(control.name) else {
                throw BenchError("unknown control input '\(control.name)' (this app feeds "
                    + "\(StreamSpec.knownControls.joined(separator: ", ")))")
            }
            let array = try Latents.makeMultiArray([value], shape: control.shape, dataType: control.type)
            dictionary[control.name] = MLFeatureValue(multiArray: array)
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

    /// Rows of `prediction`'s `frames` the loop keeps for `chunk`: those whose valid output is > 0.5 (manifest
    /// `stream.valid_output`), else the chunk's v1 count (first_chunk_skip, short last chunk).
    public func keptFrames(_ prediction: MLFeatureProvider, chunk: StreamChunk) throws -> Int {
        guard let validName = io.validName else {
            return chunk.keptFrames ?? 0
        }
        guard let valid = prediction.featureValue(for: validName)?.multiArrayValue else {
            throw BenchError("the prediction has no multiarray output '\(validName)' (stream.valid_output)")
        }
        return try Self.validRows(valid, rows: plan.spec.framesPerChunk).filter { $0 }.count
    }

    /// One flag per row of `frames`: the valid output's value > 0.5, read by logical index (whatever its strides).
    public static func validRows(_ valid: MLMultiArray, rows: Int) throws -> [Bool] {
        let shape = valid.shape.map(\.intValue)
        guard valid.count == rows, !shape.isEmpty else {
            throw BenchError("the valid output has shape \(shape), not one value per frame of a chunk (\(rows))")
        }
        var flags: [Bool] = []
        flags.reserveCapacity(rows)
        for row in 0..<rows {
            var rest = row
            var index = [NSNumber](repeating: NSNumber(value: 0), count: shape.count)
            for axis in stride(from: shape.count - 1, through: 0, by: -1) {
                index[axis] = NSNumber(value: rest % shape[axis])
                rest /= shape[axis]
            }
            flags.append(valid[index].floatValue > 0.5)
        }
        return flags
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
