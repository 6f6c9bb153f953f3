import Foundation

/// Reading and writing turbovaed.bench/1 JSON.
public enum ResultsIO {
    /// Pretty, key-sorted JSON (stable diffs).
    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    public static func encode(_ document: BenchDocument) throws -> Data {
        try encoder().encode(document)
    }

    public static func decode(_ data: Data) throws -> BenchDocument {
        try JSONDecoder().decode(BenchDocument.self, from: data)
    }

    /// Write atomically (temp file + rename) and remove a stale error file beside it.
    public static func write(_ document: BenchDocument, to url: URL) throws {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(),
                                                withIntermediateDirectories: true)
        try encode(document).write(to: url, options: .atomic)
        try? FileManager.default.removeItem(at: errorURL(for: url))
    }

    /// `<output>.error`: one line saying why a run failed (turbovaed bench reads it).
    public static func errorURL(for output: URL) -> URL {
        output.appendingPathExtension("error")
    }

    /// Record a failure next to where the results would have gone.
    public static func writeError(_ message: String, for output: URL) {
        let line = message.split(whereSeparator: \.isNewline).joined(separator: " ") + "\n"
        try? FileManager.default.createDirectory(at: output.deletingLastPathComponent(),
                                                 withIntermediateDirectories: true)
        try? Data(line.utf8).write(to: errorURL(for: output), options: .atomic)
    }

    /// Remove results and error files left by an earlier run with the same output path.
    public static func clear(_ output: URL) {
        try? FileManager.default.removeItem(at: output)
        try? FileManager.default.removeItem(at: errorURL(for: output))
    }

    /// The app's Documents folder.
    public static func documentsDirectory() -> URL? {
        FileManager.default.urls(for: .documentDirectory, in: .userDomainMask).first
    }
}
