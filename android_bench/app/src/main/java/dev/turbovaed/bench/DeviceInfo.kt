package dev.turbovaed.bench

import android.app.ActivityManager
import android.content.Context
import android.os.Build
import android.os.Debug
import android.os.PowerManager
import java.io.File

/** Facts about the phone (or emulator) and this process, for the results' device/memory/thermal fields. */
object DeviceInfo {
    fun isEmulator(): Boolean =
        Build.FINGERPRINT.startsWith("generic") ||
            Build.FINGERPRINT.contains("emulator") ||
            Build.HARDWARE == "goldfish" ||
            Build.HARDWARE == "ranchu" ||
            Build.PRODUCT.contains("sdk") ||
            Build.MODEL.contains("Android SDK built for")

    fun kind(): String = if (isEmulator()) "android-emulator" else "android"

    /** e.g. "Google Tensor G3" (API 31+: SOC_MANUFACTURER SOC_MODEL), else the board's hardware name. */
    fun soc(): String? {
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.S) {
            val parts = listOf(Build.SOC_MANUFACTURER, Build.SOC_MODEL)
                .filter { it.isNotBlank() && it != Build.UNKNOWN }
            if (parts.isNotEmpty()) return parts.joinToString(" ")
        }
        return Build.HARDWARE.takeIf { it.isNotBlank() && it != Build.UNKNOWN }
    }

    /** The primary ABI, e.g. "arm64-v8a". */
    fun cpu(): String? = Build.SUPPORTED_ABIS.firstOrNull()

    fun totalMemoryBytes(context: Context): Long? {
        val am = context.getSystemService(Context.ACTIVITY_SERVICE) as? ActivityManager ?: return null
        val info = ActivityManager.MemoryInfo()
        am.getMemoryInfo(info)
        return info.totalMem.takeIf { it > 0 }
    }

    /** PowerManager thermal status (API 29+) as a word: none, light, moderate, severe, critical, emergency, shutdown. */
    fun thermalStatus(context: Context): String? {
        if (Build.VERSION.SDK_INT < Build.VERSION_CODES.Q) return null
        val pm = context.getSystemService(Context.POWER_SERVICE) as? PowerManager ?: return null
        return when (pm.currentThermalStatus) {
            PowerManager.THERMAL_STATUS_NONE -> "none"
            PowerManager.THERMAL_STATUS_LIGHT -> "light"
            PowerManager.THERMAL_STATUS_MODERATE -> "moderate"
            PowerManager.THERMAL_STATUS_SEVERE -> "severe"
            PowerManager.THERMAL_STATUS_CRITICAL -> "critical"
            PowerManager.THERMAL_STATUS_EMERGENCY -> "emergency"
            PowerManager.THERMAL_STATUS_SHUTDOWN -> "shutdown"
            else -> "unknown"
        }
    }

    /**
     * Peak resident memory of this process: VmHWM from /proc/self/status (covers native runtime memory),
     * else the current PSS from Debug.getPss() when /proc is unreadable.
     */
    fun peakMemoryBytes(): Long? {
        val hwm = readStatusKb("VmHWM")
        if (hwm != null) return hwm * 1024
        val pssKb = Debug.getPss()
        return if (pssKb > 0) pssKb * 1024 else null
    }

    private fun readStatusKb(key: String): Long? = try {
        File("/proc/self/status").useLines { lines ->
            lines.firstOrNull { it.startsWith("$key:") }
                ?.substringAfter(':')
                ?.trim()
                ?.substringBefore(' ')
                ?.toLongOrNull()
        }
    } catch (e: java.io.IOException) {
        null
    }
}
