import XCTest
@testable import TurboVAEDBench

final class ManifestTests: XCTestCase {
    func testFixtureManifest() throws {
        XCTAssertEqual(ArtifactManifest.url(forModel: Fixtures.tinyModel).path, Fixtures.tinyManifest.path)
        let manifest = try ArtifactManifest.load(forModel: Fixtures.tinyModel)
        XCTAssertEqual(manifest.family, "wan")
        XCTAssertEqual(manifest.inputShape, [2, 16, 2, 2])
        XCTAssertEqual(manifest.outputShape, [5, 3, 16, 16])
        XCTAssertEqual(manifest.latentShape5D, [1, 16, 2, 2, 2])
        XCTAssertEqual(manifest.framesPerDecode, 5)
        XCTAssertEqual(manifest.inputName, "latents")
        XCTAssertEqual(manifest.outputName, "frames")
        XCTAssertNotNil(manifest.validSha256)
    }

    func testCompiledModelSharesTheManifestName() {
        let url = URL(fileURLWithPath: "/x/wan-256p.mlmodelc")
        XCTAssertEqual(ArtifactManifest.url(forModel: url).path, "/x/wan-256p.manifest.json")
    }

    func testBadManifestsAreErrors() throws {
        let good = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.tinyManifest)) as! [String: Any]
        func decode(_ change: (inout [String: Any]) -> Void) throws -> ArtifactManifest {
            var copy = good
            change(&copy)
            return try ArtifactManifest.decode(JSONSerialization.data(withJSONObject: copy))
        }
        XCTAssertNoThrow(try decode { _ in })
        XCTAssertThrowsError(try decode { $0["family"] = "sdxl" })
        XCTAssertThrowsError(try decode { $0["width"] = 32 })
        XCTAssertThrowsError(try decode { $0["inputs"] = [["name": "latents", "shape": [16, 2, 2]] as [String: Any]] })
        XCTAssertThrowsError(try decode { $0.removeValue(forKey: "outputs") })
        XCTAssertThrowsError(try ArtifactManifest.load(forModel: URL(fileURLWithPath: "/nonexistent/a.mlpackage")))
        XCTAssertNil(try decode { $0["sha256"] = "ABC" }.validSha256)
    }
}
