import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

// Pinned in gradle.properties; the app reports them in results JSON (runtime.version).
val executorchVersion: String = providers.gradleProperty("executorchVersion").get()
val onnxruntimeVersion: String = providers.gradleProperty("onnxruntimeVersion").get()

android {
    namespace = "dev.turbovaed.bench"
    compileSdk = 35

    defaultConfig {
        applicationId = "dev.turbovaed.bench"
        // ExecuTorch's AAR needs API 23, ONNX Runtime's API 21-24; 26 adds java.time and android.util.Half.
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"

        // The ExecuTorch AAR ships arm64-v8a (phones) and x86_64 (emulator) only.
        ndk {
            abiFilters += listOf("arm64-v8a", "x86_64")
        }
        buildConfigField("String", "EXECUTORCH_VERSION", "\"$executorchVersion\"")
        buildConfigField("String", "ONNXRUNTIME_VERSION", "\"$onnxruntimeVersion\"")
    }

    buildFeatures {
        buildConfig = true
    }

    buildTypes {
        release {
            // A benchmark build: optimised, not shrunk (R8 would strip JNI-called classes),
            // signed with the debug key so `adb install` works without a release keystore.
            isMinifyEnabled = false
            isDebuggable = false
            signingConfig = signingConfigs.getByName("debug")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    packaging {
        jniLibs {
            // fbjni (ExecuTorch) and other AARs may each carry the shared C++ runtime.
            pickFirsts += listOf("**/libc++_shared.so", "**/libfbjni.so")
        }
    }
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

dependencies {
    implementation("org.pytorch:executorch-android:$executorchVersion")
    implementation("com.microsoft.onnxruntime:onnxruntime-android:$onnxruntimeVersion")
}
