import CoreML
import Foundation

/// What Core ML plans to run where: a summary of MLComputePlan (iOS 17.4+, macOS 14.4+).
public enum ComputePlanSummary {
    /// Operation type -> preferred device ("neural_engine", "gpu", "cpu", "unknown") -> count, for the
    /// compiled model at `compiledURL` with `computeUnits`. Constants are left out. Nil where the OS has no
    /// MLComputePlan or the plan cannot be made.
    public static func summarize(compiledURL: URL, computeUnits: ComputeUnitsOption) async -> [String: [String: Int]]? {
        if #available(iOS 17.4, macOS 14.4, *) {
            let configuration = MLModelConfiguration()
            configuration.computeUnits = computeUnits.mlComputeUnits
            do {
                let plan = try await MLComputePlan.load(contentsOf: compiledURL, configuration: configuration)
                return summarize(plan)
            } catch {
                return nil
            }
        }
        return nil
    }

    @available(iOS 17.4, macOS 14.4, *)
    static func summarize(_ plan: MLComputePlan) -> [String: [String: Int]] {
        var counts: [String: [String: Int]] = [:]
        func add(_ operation: String, _ device: String) {
            counts[operation, default: [:]][device, default: 0] += 1
        }
        func visit(_ block: MLModelStructure.Program.Block) {
            for operation in block.operations {
                let name = operation.operatorName
                if !isConstant(name) {
                    add(name, deviceName(plan.deviceUsage(for: operation)?.preferred))
                }
                for nested in operation.blocks {
                    visit(nested)
                }
            }
        }
        switch plan.modelStructure {
        case .program(let program):
            for function in program.functions.values {
                visit(function.block)
            }
        case .neuralNetwork(let network):
            for layer in network.layers {
                add(layer.type, deviceName(plan.deviceUsage(for: layer)?.preferred))
            }
        default:
            break
        }
        return counts
    }

    /// MIL constants carry no compute and have no device.
    static func isConstant(_ operatorName: String) -> Bool {
        operatorName == "const" || operatorName.hasSuffix(".const") || operatorName.contains("constexpr")
    }

    static func deviceName(_ device: MLComputeDevice?) -> String {
        guard let device else { return "unknown" }
        switch device {
        case .cpu: return "cpu"
        case .gpu: return "gpu"
        case .neuralEngine: return "neural_engine"
        @unknown default: return "unknown"
        }
    }

    /// (operations preferred on the Neural Engine, all counted operations).
    public static func neuralEngineShare(_ summary: [String: [String: Int]]) -> (neuralEngine: Int, total: Int) {
        var ane = 0
        var total = 0
        for devices in summary.values {
            for (device, count) in devices {
                total += count
                if device == "neural_engine" {
                    ane += count
                }
            }
        }
        return (ane, total)
    }

    /// Operation types with at least one operation preferred off the Neural Engine, most frequent first.
    public static func offNeuralEngine(_ summary: [String: [String: Int]]) -> [(operation: String, count: Int)] {
        var rows: [(operation: String, count: Int)] = []
        for (operation, devices) in summary {
            let off = devices.filter { $0.key != "neural_engine" }.values.reduce(0, +)
            if off > 0 {
                rows.append((operation: operation, count: off))
            }
        }
        return rows.sorted { $0.count != $1.count ? $0.count > $1.count : $0.operation < $1.operation }
    }

    /// One line, e.g. "compute plan: 41/45 ops preferred on the Neural Engine; off it: ios18.gather x3".
    public static func describe(_ summary: [String: [String: Int]]) -> String {
        let share = neuralEngineShare(summary)
        var text = "compute plan: \(share.neuralEngine)/\(share.total) ops preferred on the Neural Engine"
        let off = offNeuralEngine(summary)
        if !off.isEmpty {
            text += "; off it: " + off.prefix(6).map { "\($0.operation) x\($0.count)" }.joined(separator: ", ")
        }
        return text
    }
}
