import CoreML
import Foundation

/// A Core ML model ready for predictions, with what loading it cost.
public struct LoadedModel {
    public let model: MLModel
    /// The `.mlmodelc` the model was loaded from (a temporary one for an `.mlpackage`).
    public let compiledURL: URL
    /// Time in MLModel.compileModel(at:) (0 for an `.mlmodelc`).
    public let compileMs: Double
    /// Compile + MLModel.load: the load part of the cold start.
    public let loadMs: Double
    /// True when `compiledURL` was made here and should be removed after the run.
    public let ownsCompiledModel: Bool
}

/// Finds, compiles and loads `.mlpackage` / `.mlmodelc` artifacts.
public enum ModelLoader {
    public static let supportedExtensions: Set<String> = ["mlpackage", "mlmodelc", "mlmodel"]

    /// Resolve a `-model` argument: an absolute path, a path under `documents`, or a file in the app
    /// bundle's `Models` folder.
    public static func resolve(_ path: String, documents: URL?, bundle: Bundle? = nil) throws -> URL {
        let fm = FileManager.default
        var candidates: [URL] = []
        if path.hasPrefix("/") {
            candidates.append(URL(fileURLWithPath: path))
        } else {
            if let documents {
                candidates.append(documents.appendingPathComponent(path))
            }
            if let models = bundle?.resourceURL?.appendingPathComponent("Models") {
                candidates.append(models.appendingPathComponent(path))
                candidates.append(models.appendingPathComponent((path as NSString).lastPathComponent))
            }
            candidates.append(URL(fileURLWithPath: fm.currentDirectoryPath).appendingPathComponent(path))
        }
        guard let found = candidates.first(where: { fm.fileExists(atPath: $0.path) }) else {
            let tried = candidates.map(\.path).joined(separator: ", ")
            throw BenchError("model not found: \(path) (looked in \(tried)); copy the .mlpackage and its "
                + ".manifest.json into the app's Documents folder")
        }
        guard supportedExtensions.contains(found.pathExtension.lowercased()) else {
            throw BenchError("\(found.lastPathComponent) is not a Core ML model: pass an .mlpackage or .mlmodelc "
                + "(turbovaed export --target coreml)")
        }
        return found.standardizedFileURL
    }

    /// Models (`.mlpackage` / `.mlmodelc` with a manifest beside them) found directly in `directories`.
    public static func discover(in directories: [URL]) -> [URL] {
        let fm = FileManager.default
        var found: [URL] = []
        for dir in directories {
            guard let items = try? fm.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil) else { continue }
            for item in items where supportedExtensions.contains(item.pathExtension.lowercased()) {
                if fm.fileExists(atPath: ArtifactManifest.url(forModel: item).path) {
                    found.append(item)
                }
            }
        }
        return found.sorted { $0.lastPathComponent < $1.lastPathComponent }
    }

    /// Compile (for `.mlpackage`) and load with `computeUnits`, timing both with `clock`.
    public static func load(_ url: URL, computeUnits: ComputeUnitsOption,
                            clock: ContinuousClock = ContinuousClock()) async throws -> LoadedModel {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw BenchError("model not found: \(url.path)")
        }
        let configuration = MLModelConfiguration()
        configuration.computeUnits = computeUnits.mlComputeUnits
        let start = clock.now
        var compiledURL = url
        var compileMs = 0.0
        var owns = false
        if url.pathExtension.lowercased() != "mlmodelc" {
            do {
                compiledURL = try await MLModel.compileModel(at: url)
            } catch {
                throw BenchError("Core ML could not compile \(url.lastPathComponent): \(error.localizedDescription)")
            }
            compileMs = LatencyStats.milliseconds(start.duration(to: clock.now))
            owns = true
        }
        let model: MLModel
        do {
            model = try await MLModel.load(contentsOf: compiledURL, configuration: configuration)
        } catch {
            if owns {
                try? FileManager.default.removeItem(at: compiledURL)
            }
            throw BenchError("Core ML could not load \(url.lastPathComponent) with \(computeUnits.rawValue): "
                + error.localizedDescription)
        }
        let loadMs = LatencyStats.milliseconds(start.duration(to: clock.now))
        return LoadedModel(model: model, compiledURL: compiledURL, compileMs: compileMs, loadMs: loadMs,
                           ownsCompiledModel: owns)
    }

    /// Remove the temporary `.mlmodelc` made by `load`.
    public static func cleanUp(_ loaded: LoadedModel) {
        if loaded.ownsCompiledModel {
            try? FileManager.default.removeItem(at: loaded.compiledURL)
        }
    }

    /// Size on disk: the file, or every regular file under a directory (an `.mlpackage` is a directory).
    public static func byteCount(of url: URL) -> Int? {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: url.path, isDirectory: &isDirectory) else { return nil }
        if !isDirectory.boolValue {
            let attributes = try? fm.attributesOfItem(atPath: url.path)
            return (attributes?[.size] as? NSNumber)?.intValue
        }
        let keys: [URLResourceKey] = [.fileSizeKey, .isRegularFileKey]
        guard let walker = fm.enumerator(at: url, includingPropertiesForKeys: keys) else { return nil }
        var total = 0
        for case let file as URL in walker {
            guard let values = try? file.resourceValues(forKeys: Set(keys)), values.isRegularFile == true else {
                continue
            }
            total += values.fileSize ?? 0
        }
        return total
    }
}

/// Input and output of the decoder graph, checked against the manifest.
public struct ModelIO {
    public let inputName: String
    public let outputName: String
    /// The multiarray type the model declares for its input (.float16 unless it declares .float32).
    public let inputDataType: MLMultiArrayDataType

    public init(model: MLModel, manifest: ArtifactManifest) throws {
        let description = model.modelDescription
        let inputs = description.inputDescriptionsByName
        let outputs = description.outputDescriptionsByName
        guard let input = inputs[manifest.inputName] ?? (inputs.count == 1 ? inputs.values.first : nil) else {
            throw BenchError("the model has no input '\(manifest.inputName)' (it has "
                + "\(inputs.keys.sorted().joined(separator: ", "))): the manifest belongs to another artifact")
        }
        guard let output = outputs[manifest.outputName] ?? (outputs.count == 1 ? outputs.values.first : nil) else {
            throw BenchError("the model has no output '\(manifest.outputName)' (it has "
                + "\(outputs.keys.sorted().joined(separator: ", "))): the manifest belongs to another artifact")
        }
        guard input.type == .multiArray, let constraint = input.multiArrayConstraint else {
            throw BenchError("model input '\(input.name)' is not a multiarray: export it again with turbovaed")
        }
        let modelShape = constraint.shape.map(\.intValue)
        if !modelShape.isEmpty,
           Latents.squeezeLeadingOnes(modelShape) != Latents.squeezeLeadingOnes(manifest.inputShape) {
            throw BenchError("model input shape \(modelShape) differs from the manifest's \(manifest.inputShape): "
                + "the manifest belongs to another artifact")
        }
        inputName = input.name
        outputName = output.name
        inputDataType = constraint.dataType == .float32 ? .float32 : .float16
    }

    /// Check one prediction's output: shape as in the manifest; returns how many of up to 256 evenly
    /// spaced samples are not finite.
    public func check(_ prediction: MLFeatureProvider, manifest: ArtifactManifest) throws -> Int {
        guard let frames = prediction.featureValue(for: outputName)?.multiArrayValue else {
            throw BenchError("the prediction has no multiarray output '\(outputName)'")
        }
        let shape = frames.shape.map(\.intValue)
        guard Latents.squeezeLeadingOnes(shape) == Latents.squeezeLeadingOnes(manifest.outputShape) else {
            throw BenchError("output shape \(shape) differs from the manifest's \(manifest.outputShape)")
        }
        return Self.nonFiniteSamples(frames)
    }

    /// How many of up to 256 evenly spaced values of `array` are not finite.
    public static func nonFiniteSamples(_ array: MLMultiArray) -> Int {
        let count = array.count
        guard count > 0 else { return 0 }
        let samples = Swift.min(256, count)
        var nonFinite = 0
        for i in 0..<samples {
            let value = array[i * (count / samples)].doubleValue
            if !value.isFinite {
                nonFinite += 1
            }
        }
        return nonFinite
    }
}
