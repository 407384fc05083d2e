using System.Diagnostics;
using Iommu.Conformance.Tests.Qemu;
using Xunit.Abstractions;

namespace Iommu.Conformance.Tests;

/// <summary>Runs where qemu-system-x86_64 is installed; skipped with a message elsewhere, except under CI (CI=true), where a missing QEMU fails.</summary>
public sealed class QemuFactAttribute : FactAttribute
{
    public QemuFactAttribute()
    {
        if (QtestClient.FindQemu() is null && Environment.GetEnvironmentVariable("CI") != "true")
        {
            Skip = "qemu-system-x86_64 is not installed (Debian: apt-get install qemu-system-x86; .ci/run installs it). The QEMU VT-d conformance test needs it.";
        }
    }
}
