import SwiftUI

/// The benchmark app. With launch arguments (`-model ...`, see BenchArguments.usage) it runs at once and
/// writes the JSON to Documents; without them it shows the models it finds and a Run button.
@main
struct TurboVAEDBenchApp: App {
    @StateObject private var bench = BenchViewModel()

    var body: some Scene {
        WindowGroup {
            ContentView()
                .environmentObject(bench)
                .task {
                    await bench.startFromLaunchArguments()
                }
        }
    }
}
