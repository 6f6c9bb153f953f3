import CoreML

/// `MLModelConfiguration.computeUnits`, named as in the results (`runtime.compute_units`).
public enum ComputeUnitsOption: String, CaseIterable, Codable, Sendable {
    case all
    case cpuAndNeuralEngine
    case cpuAndGPU
    case cpuOnly

    /// The Core ML setting.
    public var mlComputeUnits: MLComputeUnits {
        switch self {
        case .all: return .all
        case .cpuAndNeuralEngine: return .cpuAndNeuralEngine
        case .cpuAndGPU: return .cpuAndGPU
        case .cpuOnly: return .cpuOnly
        }
    }

    /// Short label for the screen.
    public var shortName: String {
        switch self {
        case .all: return "ALL"
        case .cpuAndNeuralEngine: return "CPU+ANE"
        case .cpuAndGPU: return "CPU+GPU"
        case .cpuOnly: return "CPU"
        }
    }

    /// Parse one name; also accepts coremltools spellings (ALL, CPU_AND_NE, CPU_AND_GPU, CPU_ONLY).
    public static func parse(_ text: String) throws -> ComputeUnitsOption {
        let key = text.trimmingCharacters(in: .whitespaces).lowercased().replacingOccurrences(of: "_", with: "")
        switch key {
        case "all": return .all
        case "cpuandneuralengine", "cpuandne", "ane": return .cpuAndNeuralEngine
        case "cpuandgpu", "gpu": return .cpuAndGPU
        case "cpuonly", "cpu": return .cpuOnly
        default:
            let names = ComputeUnitsOption.allCases.map(\.rawValue).joined(separator: ", ")
            throw BenchError("unknown compute units '\(text)': use one of \(names)")
        }
    }

    /// Parse a comma-separated list, e.g. "all,cpuAndNeuralEngine"; duplicates are dropped, order kept.
    public static func parseList(_ text: String) throws -> [ComputeUnitsOption] {
        var out: [ComputeUnitsOption] = []
        for part in text.split(separator: ",") where !part.trimmingCharacters(in: .whitespaces).isEmpty {
            let unit = try parse(String(part))
            if !out.contains(unit) {
                out.append(unit)
            }
        }
        guard !out.isEmpty else {
            throw BenchError("no compute units given: use e.g. -computeUnits all,cpuAndNeuralEngine")
        }
        return out
    }
}
