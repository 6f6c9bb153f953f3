import CoreML
import Darwin
import Foundation

/// Facts about the device: hardware model, OS, memory footprint, thermal state.
public enum DeviceProbe {
    /// `device.kind` for this build: "ios-simulator", "mac", or "iphone16pro" on an iOS device.
    public static var defaultKind: String {
        #if targetEnvironment(simulator)
        return "ios-simulator"
        #elseif os(macOS)
        return "mac"
        #else
        return "iphone16pro"
        #endif
    }

    public static var isSimulator: Bool {
        #if targetEnvironment(simulator)
        return true
        #else
        return false
        #endif
    }

    /// "iOS" or "macOS".
    public static var osName: String {
        #if os(iOS)
        return "iOS"
        #elseif os(macOS)
        return "macOS"
        #else
        return "unknown"
        #endif
    }

    /// e.g. "18.2.1".
    public static var osVersion: String {
        let v = ProcessInfo.processInfo.operatingSystemVersion
        return "\(v.majorVersion).\(v.minorVersion).\(v.patchVersion)"
    }

    /// Hardware identifier: "iPhone17,1" on an iPhone 16 Pro (utsname.machine), the simulated model on
    /// the simulator, hw.model ("Mac15,8") on a Mac.
    public static func machineIdentifier() -> String {
        #if targetEnvironment(simulator)
        if let simulated = ProcessInfo.processInfo.environment["SIMULATOR_MODEL_IDENTIFIER"], !simulated.isEmpty {
            return simulated
        }
        #endif
        #if os(macOS)
        if let model = sysctlString("hw.model") {
            return model
        }
        #endif
        var info = utsname()
        guard uname(&info) == 0 else { return "unknown" }
        return withUnsafeBytes(of: info.machine) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }

    /// Marketing name and chip of recent iPhones, by hardware identifier.
    public static let iPhoneModels: [String: (name: String, soc: String)] = [
        "iPhone17,1": ("iPhone 16 Pro", "A18 Pro"),
        "iPhone17,2": ("iPhone 16 Pro Max", "A18 Pro"),
        "iPhone17,3": ("iPhone 16", "A18"),
        "iPhone17,4": ("iPhone 16 Plus", "A18"),
        "iPhone17,5": ("iPhone 16e", "A18"),
        "iPhone16,1": ("iPhone 15 Pro", "A17 Pro"),
        "iPhone16,2": ("iPhone 15 Pro Max", "A17 Pro"),
        "iPhone15,4": ("iPhone 15", "A16 Bionic"),
        "iPhone15,5": ("iPhone 15 Plus", "A16 Bionic"),
        "iPhone15,2": ("iPhone 14 Pro", "A16 Bionic"),
        "iPhone15,3": ("iPhone 14 Pro Max", "A16 Bionic"),
    ]

    /// True for the iPhone 16 Pro and Pro Max.
    public static func isIPhone16Pro(_ identifier: String) -> Bool {
        identifier == "iPhone17,1" || identifier == "iPhone17,2"
    }

    /// The results' `device` block. `kind` overrides the build's default kind.
    public static func describe(kind: String? = nil) -> BenchDevice {
        let machine = machineIdentifier()
        let cpu: String?
        let soc: String?
        #if os(macOS)
        let brand = sysctlString("machdep.cpu.brand_string")
        cpu = brand
        soc = (brand?.hasPrefix("Apple") ?? false) ? brand : nil
        #else
        soc = iPhoneModels[machine]?.soc
        cpu = soc
        #endif
        return BenchDevice(
            kind: kind ?? defaultKind, model: machine, os: osName, osVersion: osVersion, cpu: cpu, soc: soc,
            cpuCount: ProcessInfo.processInfo.processorCount,
            memoryBytes: Int(clamping: ProcessInfo.processInfo.physicalMemory)
        )
    }

    /// `ProcessInfo.thermalState` as text: nominal, fair, serious, critical.
    public static func thermalState() -> String {
        switch ProcessInfo.processInfo.thermalState {
        case .nominal: return "nominal"
        case .fair: return "fair"
        case .serious: return "serious"
        case .critical: return "critical"
        @unknown default: return "unknown"
        }
    }

    /// Core ML's version as the runtime version: the CoreML framework build and the OS version.
    public static func coreMLVersion() -> String {
        let info = Bundle(for: MLModel.self).infoDictionary
        let build = (info?["CFBundleVersion"] as? String) ?? (info?["CFBundleShortVersionString"] as? String)
        if let build, !build.isEmpty {
            return "\(build) (\(osName) \(osVersion))"
        }
        return "\(osName) \(osVersion)"
    }

    /// The process's physical footprint now, as the system accounts it (task_vm_info.phys_footprint; what
    /// Xcode's memory gauge and the jetsam limit use), and the kernel's lifetime peak where it reports one.
    public static func physFootprint() -> (current: UInt64, lifetimePeak: UInt64?)? {
        var info = task_vm_info_data_t()
        let words = MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<integer_t>.size
        var count = mach_msg_type_number_t(words)
        let status: kern_return_t = withUnsafeMutablePointer(to: &info) { pointer in
            pointer.withMemoryRebound(to: integer_t.self, capacity: words) { raw in
                task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), raw, &count)
            }
        }
        guard status == KERN_SUCCESS else { return nil }
        var peak: UInt64? = nil
        if let offset = MemoryLayout<task_vm_info_data_t>.offset(of: \task_vm_info_data_t.ledger_phys_footprint_peak) {
            let needed = (offset + MemoryLayout<Int64>.size) / MemoryLayout<integer_t>.size
            if Int(count) >= needed, info.ledger_phys_footprint_peak > 0 {
                peak = UInt64(info.ledger_phys_footprint_peak)
            }
        }
        return (info.phys_footprint, peak)
    }

    static func sysctlString(_ name: String) -> String? {
        var size = 0
        guard sysctlbyname(name, nil, &size, nil, 0) == 0, size > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: size)
        guard sysctlbyname(name, &buffer, &size, nil, 0) == 0 else { return nil }
        let text = String(decoding: buffer.prefix(while: { $0 != 0 }), as: UTF8.self)
        return text.isEmpty ? nil : text
    }
}

/// Samples the physical footprint on a background queue while a benchmark runs, keeping the maximum.
public final class MemorySampler: @unchecked Sendable {
    private let queue = DispatchQueue(label: "dev.turbovaed.bench.memory", qos: .utility)
    private let lock = NSLock()
    private var timer: DispatchSourceTimer?
    private var peak: UInt64 = 0

    public init() {}

    /// Start sampling every `intervalMs` milliseconds.
    public func start(intervalMs: Int = 5) {
        sample()
        let source = DispatchSource.makeTimerSource(queue: queue)
        source.schedule(deadline: .now(), repeating: .milliseconds(intervalMs), leeway: .milliseconds(1))
        source.setEventHandler { [weak self] in
            self?.sample()
        }
        source.resume()
        lock.lock()
        timer = source
        lock.unlock()
    }

    /// Take one sample now (also called after each prediction).
    public func sample() {
        guard let current = DeviceProbe.physFootprint()?.current else { return }
        lock.lock()
        peak = Swift.max(peak, current)
        lock.unlock()
    }

    /// The peak so far, in bytes (nil when no sample could be taken).
    public var peakBytes: UInt64? {
        lock.lock()
        defer { lock.unlock() }
        return peak > 0 ? peak : nil
    }

    /// Stop sampling; returns the peak in bytes.
    @discardableResult
    public func stop() -> UInt64? {
        lock.lock()
        let source = timer
        timer = nil
        lock.unlock()
        source?.cancel()
        sample()
        return peakBytes
    }

    deinit {
        timer?.cancel()
    }
}
