using Iommu.Conformance.Tests.Qemu;
using Iommu.VtD.Hardware;

namespace Iommu.Conformance.Tests;

/// <summary>The <c>VtdConfig.Qemu72*</c> presets against the registers of a live QEMU 7.2 <c>intel-iommu</c>.</summary>
public sealed class QemuPresetTests
{
    public static TheoryData<string, string> Presets => new()
    {
        { nameof(VtdConfig.Qemu72AwBits39), "aw-bits=39" },
        { nameof(VtdConfig.Qemu72AwBits48), "aw-bits=48" },
        { nameof(VtdConfig.Qemu72ScalableAwBits39), "aw-bits=39,x-scalable-mode=on" },
        { nameof(VtdConfig.Qemu72ScalableAwBits48), "aw-bits=48,x-scalable-mode=on" },
    };

    [QemuTheory]
    [MemberData(nameof(Presets))]
    public void Preset_has_the_ver_cap_and_ecap_qemu_7_2_reports(string preset, string options)
    {
        string qemu = QtestClient.FindQemu() ?? throw new InvalidOperationException("CI=true but qemu-system-x86_64 is not installed: .ci/run must install Debian's qemu-system-x86.");
        VtdConfig config = preset switch
        {
            nameof(VtdConfig.Qemu72AwBits39) => VtdConfig.Qemu72AwBits39,
            nameof(VtdConfig.Qemu72AwBits48) => VtdConfig.Qemu72AwBits48,
            nameof(VtdConfig.Qemu72ScalableAwBits39) => VtdConfig.Qemu72ScalableAwBits39,
            nameof(VtdConfig.Qemu72ScalableAwBits48) => VtdConfig.Qemu72ScalableAwBits48,
            _ => throw new ArgumentOutOfRangeException(nameof(preset)),
        };

        // QEMU turns interrupt remapping on by default; the preset says whether its unit has it.
        string intremap = (config.Ecap & VtdEcap.Ir) != 0 ? "on" : "off";
        string device = $"intel-iommu,{options},intremap={intremap}";
        string bios = Path.Combine(Path.GetTempPath(), "iommu-conformance-halt.bin");
        EduMachine.WriteHaltBios(bios);
        using QtestClient q = QtestClient.Start(qemu,
        [
            "-machine", "q35,accel=tcg", "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "none",
            "-m", "256M", "-bios", bios, "-device", device,
        ], TimeSpan.FromSeconds(20));

        uint ver = q.Readl(EduMachine.DmarBase + 0x00);
        ulong cap = q.Readq(EduMachine.DmarBase + 0x08), ecap = q.Readq(EduMachine.DmarBase + 0x10);

        Assert.True(ver == config.Version, $"{preset} vs QEMU {device}: VER 0x{config.Version:x}, QEMU 0x{ver:x}");
        Assert.True(cap == config.Cap, $"{preset} vs QEMU {device}: CAP 0x{config.Cap:x16}, QEMU 0x{cap:x16}");
        Assert.True(ecap == config.Ecap, $"{preset} vs QEMU {device}: ECAP 0x{config.Ecap:x16}, QEMU 0x{ecap:x16}");
    }
}
