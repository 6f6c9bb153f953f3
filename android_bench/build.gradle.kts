// Top-level build file: plugin versions only; the app module is in app/build.gradle.kts.
// AGP 8.13 needs Gradle 8.13+ and JDK 17+.
plugins {
    id("com.android.application") version "8.13.2" apply false
    id("org.jetbrains.kotlin.android") version "2.2.20" apply false
}
