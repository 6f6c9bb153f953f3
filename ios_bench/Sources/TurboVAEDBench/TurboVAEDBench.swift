import Foundation

/// Identity of this harness in the results it writes (the `tool` block of turbovaed.bench/1).
public enum TurboVAEDBench {
    /// Kept equal to `turbo_vaed.__version__` (tests/test_ios_bench.py checks it).
    public static let version = "0.1.0"
    /// `tool.name` in the results; one of the names the schema allows.
    public static let toolName = "ios_bench"
    /// `schema` in the results.
    public static let schemaID = "turbovaed.bench/1"
}

/// A problem the user can fix, described on one line (shown on screen and written next to the JSON).
public struct BenchError: LocalizedError, Equatable, Sendable {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    public var errorDescription: String? { message }
}
