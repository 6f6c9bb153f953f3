import CoreML
import XCTest
@testable import TurboVAEDBench

final class LatentsTests: XCTestCase {
    /// An .npy v1.0 file the way numpy.save writes it (header padded to a multiple of 64 bytes).
    static func npy(descr: String, shape: [Int], payload: [UInt8]) -> [UInt8] {
        let dims = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map { String($0) }.joined(separator: ", ") + ")"
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(dims), }"
        while (10 + header.utf8.count + 1) % 64 != 0 {
            header += " "
        }
        header += "\n"
        let length = header.utf8.count
        var bytes: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(length & 0xFF), UInt8(length >> 8)]
        bytes += Array(header.utf8)
        bytes += payload
        return bytes
    }

    static func bytes<T>(_ values: [T]) -> [UInt8] {
        values.withUnsafeBytes { Array($0) }
    }

    func testHalfBitPatterns() throws {
        XCTAssertEqual(try Latents.floatToHalfBits([1, -2, 65504, 0]), [0x3C00, 0xC000, 0x7BFF, 0x0000])
        let back = try Latents.halfBitsToFloat([0x3C00, 0xC000, 0x7BFF, 0x3555])
        XCTAssertEqual(back[0], 1)
        XCTAssertEqual(back[1], -2)
        XCTAssertEqual(back[2], 65504)
        XCTAssertEqual(back[3], 0.333251953125, accuracy: 1e-9)
    }

    func testHalfRoundTripIsClose() throws {
        let values: [Float] = [0.1, -0.7, 3.14159, 1e-4, -12.5]
        let back = try Latents.halfBitsToFloat(Latents.floatToHalfBits(values))
        for (a, b) in zip(values, back) {
            XCTAssertEqual(a, b, accuracy: Swift.abs(a) * 1e-3)
        }
    }

    func testParseNpyHeader() throws {
        let file = Self.npy(descr: "<f4", shape: [2, 3], payload: Self.bytes([Float](repeating: 1, count: 6)))
        XCTAssertEqual(file.count % 64, 24)  // header padded to a multiple of 64 bytes, then 24 payload bytes
        let npy = try Latents.parseNpy(file)
        XCTAssertEqual(npy.descr, "<f4")
        XCTAssertEqual(npy.shape, [2, 3])
        XCTAssertFalse(npy.fortranOrder)
        XCTAssertEqual(npy.payload.count, 24)
        XCTAssertEqual(try Latents.parseNpy(Self.npy(descr: "<f2", shape: [5], payload: [])).shape, [5])
        XCTAssertThrowsError(try Latents.parseNpy([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]))
    }

    func testReadFileFormats() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let shape = [2, 1, 1, 3]
        let values: [Float] = [0, 1, 2, -1, 0.5, 4]
        let f32 = dir.appendingPathComponent("z32.npy")
        try Data(Self.npy(descr: "<f4", shape: shape, payload: Self.bytes(values))).write(to: f32)
        XCTAssertEqual(try Latents.readFile(f32, expectedShape: shape), values)

        let batched = dir.appendingPathComponent("z1.npy")  // leading batch axis of 1 is accepted
        try Data(Self.npy(descr: "<f4", shape: [1] + shape, payload: Self.bytes(values))).write(to: batched)
        XCTAssertEqual(try Latents.readFile(batched, expectedShape: shape), values)

        let f16 = dir.appendingPathComponent("z16.npy")
        let halves = try Latents.floatToHalfBits(values)
        try Data(Self.npy(descr: "<f2", shape: shape, payload: Self.bytes(halves))).write(to: f16)
        XCTAssertEqual(try Latents.readFile(f16, expectedShape: shape), values)

        let raw32 = dir.appendingPathComponent("z32.bin")
        try Data(Self.bytes(values)).write(to: raw32)
        XCTAssertEqual(try Latents.readFile(raw32, expectedShape: shape), values)
        let raw16 = dir.appendingPathComponent("z16.bin")
        try Data(Self.bytes(halves)).write(to: raw16)
        XCTAssertEqual(try Latents.readFile(raw16, expectedShape: shape), values)

        XCTAssertThrowsError(try Latents.readFile(raw32, expectedShape: [2, 1, 1, 4]))  // wrong size
        XCTAssertThrowsError(try Latents.readFile(f32, expectedShape: [3, 1, 1, 2]))  // wrong shape
        let f64 = dir.appendingPathComponent("z64.npy")
        try Data(Self.npy(descr: "<f8", shape: shape, payload: Self.bytes(values.map(Double.init)))).write(to: f64)
        XCTAssertThrowsError(try Latents.readFile(f64, expectedShape: shape))
        XCTAssertThrowsError(try Latents.readFile(dir.appendingPathComponent("missing.npy"), expectedShape: shape))
    }

    func testRandomLatentsAreReproducibleAndStandardNormal() {
        let a = Latents.randomNormal(count: 20_001, seed: 7)
        XCTAssertEqual(a, Latents.randomNormal(count: 20_001, seed: 7))
        XCTAssertNotEqual(a, Latents.randomNormal(count: 20_001, seed: 8))
        XCTAssertEqual(a.count, 20_001)
        let mean = a.reduce(0, +) / Float(a.count)
        let variance = a.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(a.count)
        XCTAssertEqual(mean, 0, accuracy: 0.03)
        XCTAssertEqual(variance, 1, accuracy: 0.05)
    }

    func testMultiArrayIsRowMajorFloat16() throws {
        let shape = [2, 3, 1, 2]
        let values = (0..<12).map(Float.init)
        let array = try Latents.makeMultiArray(values, shape: shape, dataType: .float16)
        XCTAssertEqual(array.dataType, .float16)
        XCTAssertEqual(array.shape.map(\.intValue), shape)
        XCTAssertEqual(array.strides.map(\.intValue), [6, 2, 2, 1])
        XCTAssertEqual(array[[1, 2, 0, 1] as [NSNumber]].floatValue, 11)
        let f32 = try Latents.makeMultiArray(values, shape: shape, dataType: .float32)
        XCTAssertEqual(f32[[0, 1, 0, 0] as [NSNumber]].floatValue, 2)
        XCTAssertThrowsError(try Latents.makeMultiArray(values, shape: [5], dataType: .float16))
        XCTAssertThrowsError(try Latents.makeMultiArray(values, shape: shape, dataType: .int32))
        XCTAssertEqual(Latents.rowMajorStrides([3, 16, 32, 32]), [16384, 1024, 32, 1])
        XCTAssertEqual(Latents.squeezeLeadingOnes([1, 1, 3, 1]), [3, 1])
    }
}
