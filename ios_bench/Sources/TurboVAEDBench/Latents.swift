import Accelerate
import CoreML
import Foundation

/// Where the decoder's input comes from.
public enum LatentsSource: Equatable, Sendable {
    /// Standard normal latents from a seeded generator (the same numbers on every device).
    case random(seed: UInt64)
    /// A file: `.npy` (float16/float32, C order) or raw little-endian `.bin` (float16 or float32,
    /// told apart by size) holding [T, C, h, w] (a leading batch axis of 1 is accepted).
    case file(URL)

    /// One line for the notes and the screen.
    public var summary: String {
        switch self {
        case .random(let seed): return "random normal latents (seed \(seed))"
        case .file(let url): return "latents from \(url.lastPathComponent)"
        }
    }
}

/// A parsed `.npy` file.
public struct NpyArray: Equatable, Sendable {
    /// numpy dtype string, e.g. "<f4".
    public let descr: String
    public let fortranOrder: Bool
    public let shape: [Int]
    /// The raw element bytes after the header.
    public let payload: [UInt8]
}

/// Latent tensors for Core ML: reading, generating, float16 conversion, MLMultiArray creation.
public enum Latents {
    /// The decoder input as an MLMultiArray of `dataType` (.float16 by default) and `shape` [T, C, h, w].
    public static func makeInput(_ source: LatentsSource, shape: [Int],
                                 dataType: MLMultiArrayDataType = .float16) throws -> MLMultiArray {
        let count = try elementCount(shape)
        let values: [Float]
        switch source {
        case .random(let seed):
            values = randomNormal(count: count, seed: seed)
        case .file(let url):
            values = try readFile(url, expectedShape: shape)
        }
        return try makeMultiArray(values, shape: shape, dataType: dataType)
    }

    /// Product of the sizes; every size must be positive.
    public static func elementCount(_ shape: [Int]) throws -> Int {
        guard !shape.isEmpty, shape.allSatisfy({ $0 > 0 }) else {
            throw BenchError("latent shape \(shape) must have positive sizes")
        }
        return shape.reduce(1, *)
    }

    /// Row-major strides in elements.
    public static func rowMajorStrides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var step = 1
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[axis] = step
            step *= shape[axis]
        }
        return strides
    }

    /// Shape without leading 1s, so [1, 3, 16, 8, 8] and [3, 16, 8, 8] compare equal.
    public static func squeezeLeadingOnes(_ shape: [Int]) -> [Int] {
        Array(shape.drop(while: { $0 == 1 }))
    }

    /// `count` standard normal values (Box-Muller over SplitMix64), reproducible for a seed.
    public static func randomNormal(count: Int, seed: UInt64) -> [Float] {
        var generator = SplitMix64(seed: seed)
        var out = [Float]()
        out.reserveCapacity(count)
        while out.count < count {
            let u1 = Swift.max(Double.random(in: 0..<1, using: &generator), Double.leastNonzeroMagnitude)
            let u2 = Double.random(in: 0..<1, using: &generator)
            let radius = (-2 * log(u1)).squareRoot()
            let angle = 2 * Double.pi * u2
            out.append(Float(radius * cos(angle)))
            if out.count < count {
                out.append(Float(radius * sin(angle)))
            }
        }
        return out
    }

    /// Read a latents file as Float values in C order, checking it holds `expectedShape`.
    public static func readFile(_ url: URL, expectedShape: [Int]) throws -> [Float] {
        let count = try elementCount(expectedShape)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw BenchError("latents file not found: \(url.path)")
        }
        let bytes = try [UInt8](Data(contentsOf: url))
        if url.pathExtension.lowercased() == "npy" {
            let npy = try parseNpy(bytes)
            guard !npy.fortranOrder else {
                throw BenchError("\(url.lastPathComponent) is Fortran-ordered: save it with np.ascontiguousarray")
            }
            guard squeezeLeadingOnes(npy.shape) == squeezeLeadingOnes(expectedShape) else {
                throw BenchError("\(url.lastPathComponent) has shape \(npy.shape) but the model takes "
                    + "\(expectedShape) [T, C, h, w]")
            }
            switch npy.descr {
            case "<f4", "=f4": return try floats(fromFloat32Bytes: npy.payload, count: count)
            case "<f2", "=f2": return try halfBitsToFloat(halfBits(fromBytes: npy.payload, count: count))
            default:
                throw BenchError("\(url.lastPathComponent) has dtype \(npy.descr): save latents as "
                    + "little-endian float32 or float16")
            }
        }
        switch bytes.count {
        case count * 4: return try floats(fromFloat32Bytes: bytes, count: count)
        case count * 2: return try halfBitsToFloat(halfBits(fromBytes: bytes, count: count))
        default:
            throw BenchError("\(url.lastPathComponent) has \(bytes.count) bytes; \(expectedShape) needs "
                + "\(count * 4) (float32) or \(count * 2) (float16)")
        }
    }

    /// Parse an `.npy` file (format versions 1, 2 and 3).
    public static func parseNpy(_ bytes: [UInt8]) throws -> NpyArray {
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // \x93NUMPY
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else {
            throw BenchError("not an .npy file (bad magic)")
        }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw BenchError("truncated .npy header") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default:
            throw BenchError("unsupported .npy format version \(major)")
        }
        let payloadStart = headerStart + headerLength
        guard bytes.count >= payloadStart else { throw BenchError("truncated .npy header") }
        let header = String(decoding: bytes[headerStart..<payloadStart], as: UTF8.self)
        guard let descr = quotedValue(after: "'descr'", in: header) else {
            throw BenchError(".npy header has no descr: \(header)")
        }
        let fortran = header.range(of: "'fortran_order': True") != nil
        guard let open = header.range(of: "'shape': ("),
              let close = header.range(of: ")", range: open.upperBound..<header.endIndex) else {
            throw BenchError(".npy header has no shape: \(header)")
        }
        var shape: [Int] = []
        for part in header[open.upperBound..<close.lowerBound].split(separator: ",") {
            let text = part.trimmingCharacters(in: .whitespaces)
            if text.isEmpty { continue }
            guard let size = Int(text), size >= 0 else { throw BenchError(".npy shape is not integers: \(header)") }
            shape.append(size)
        }
        return NpyArray(descr: descr, fortranOrder: fortran, shape: shape, payload: Array(bytes[payloadStart...]))
    }

    static func quotedValue(after key: String, in header: String) -> String? {
        guard let keyRange = header.range(of: key),
              let colon = header.range(of: ":", range: keyRange.upperBound..<header.endIndex),
              let first = header.range(of: "'", range: colon.upperBound..<header.endIndex),
              let second = header.range(of: "'", range: first.upperBound..<header.endIndex) else { return nil }
        return String(header[first.upperBound..<second.lowerBound])
    }

    static func floats(fromFloat32Bytes bytes: [UInt8], count: Int) throws -> [Float] {
        guard bytes.count >= count * 4 else {
            throw BenchError("latents hold \(bytes.count / 4) float32 values, expected \(count)")
        }
        var out = [Float](repeating: 0, count: count)
        out.withUnsafeMutableBytes { dst in
            bytes.withUnsafeBytes { src in
                dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[0..<(count * 4)]))
            }
        }
        return out
    }

    static func halfBits(fromBytes bytes: [UInt8], count: Int) throws -> [UInt16] {
        guard bytes.count >= count * 2 else {
            throw BenchError("latents hold \(bytes.count / 2) float16 values, expected \(count)")
        }
        var out = [UInt16](repeating: 0, count: count)
        out.withUnsafeMutableBytes { dst in
            bytes.withUnsafeBytes { src in
                dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[0..<(count * 2)]))
            }
        }
        return out
    }

    /// IEEE float16 bit patterns from Float values (round to nearest even, via vImage).
    public static func floatToHalfBits(_ values: [Float]) throws -> [UInt16] {
        var out = [UInt16](repeating: 0, count: values.count)
        guard !values.isEmpty else { return out }
        var source = values
        let status: vImage_Error = source.withUnsafeMutableBytes { src in
            out.withUnsafeMutableBytes { dst in
                var srcBuffer = vImage_Buffer(data: src.baseAddress, height: 1,
                                              width: vImagePixelCount(values.count), rowBytes: src.count)
                var dstBuffer = vImage_Buffer(data: dst.baseAddress, height: 1,
                                              width: vImagePixelCount(values.count), rowBytes: dst.count)
                return vImageConvert_PlanarFtoPlanar16F(&srcBuffer, &dstBuffer, vImage_Flags(kvImageNoFlags))
            }
        }
        guard status == kvImageNoError else { throw BenchError("float16 conversion failed (vImage \(status))") }
        return out
    }

    /// Float values from IEEE float16 bit patterns (via vImage).
    public static func halfBitsToFloat(_ bits: [UInt16]) throws -> [Float] {
        var out = [Float](repeating: 0, count: bits.count)
        guard !bits.isEmpty else { return out }
        var source = bits
        let status: vImage_Error = source.withUnsafeMutableBytes { src in
            out.withUnsafeMutableBytes { dst in
                var srcBuffer = vImage_Buffer(data: src.baseAddress, height: 1,
                                              width: vImagePixelCount(bits.count), rowBytes: src.count)
                var dstBuffer = vImage_Buffer(data: dst.baseAddress, height: 1,
                                              width: vImagePixelCount(bits.count), rowBytes: dst.count)
                return vImageConvert_Planar16FtoPlanarF(&srcBuffer, &dstBuffer, vImage_Flags(kvImageNoFlags))
            }
        }
        guard status == kvImageNoError else { throw BenchError("float16 conversion failed (vImage \(status))") }
        return out
    }

    /// A contiguous row-major MLMultiArray (.float16 or .float32) holding `values`.
    public static func makeMultiArray(_ values: [Float], shape: [Int],
                                      dataType: MLMultiArrayDataType) throws -> MLMultiArray {
        let count = try elementCount(shape)
        guard values.count == count else {
            throw BenchError("\(values.count) latent values do not fill shape \(shape)")
        }
        let nsShape = shape.map { NSNumber(value: $0) }
        let nsStrides = rowMajorStrides(shape).map { NSNumber(value: $0) }
        switch dataType {
        case .float16:
            let bits = try floatToHalfBits(values)
            let byteCount = count * MemoryLayout<UInt16>.stride
            let pointer = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: 64)
            bits.withUnsafeBytes { pointer.copyMemory(from: $0.baseAddress!, byteCount: byteCount) }
            return try MLMultiArray(dataPointer: pointer, shape: nsShape, dataType: .float16, strides: nsStrides,
                                    deallocator: { $0.deallocate() })
        case .float32:
            let byteCount = count * MemoryLayout<Float>.stride
            let pointer = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: 64)
            values.withUnsafeBytes { pointer.copyMemory(from: $0.baseAddress!, byteCount: byteCount) }
            return try MLMultiArray(dataPointer: pointer, shape: nsShape, dataType: .float32, strides: nsStrides,
                                    deallocator: { $0.deallocate() })
        default:
            throw BenchError("model input type \(dataType.rawValue) is not float16/float32: export it again")
        }
    }
}

/// SplitMix64: a tiny, well-mixed 64-bit generator; the same seed gives the same latents everywhere.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
