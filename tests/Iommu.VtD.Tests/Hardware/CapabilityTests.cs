using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

public class CapabilityTests
{
    public static TheoryData<string> Presets =>
    [
        "Legacy39Bit", "Legacy48Bit", "ScalableMode39Bit", "ScalableMode48Bit", "ScalableMode57Bit",
        "Qemu72AwBits39", "Qemu72AwBits48", "Qemu72ScalableAwBits39", "Qemu72ScalableAwBits48",
    ];

    /// <summary>
    /// VER, CAP and ECAP as QEMU 7.2 (Debian 7.2+dfsg-7) reads them back over qtest for
    /// <c>-machine q35 -device intel-iommu,OPTIONS,intremap=off</c>; Iommu.Conformance.Tests asks a live QEMU.
    /// </summary>
    public static TheoryData<string, string, uint, ulong, ulong> QemuUnits => new()
    {
        { "Qemu72AwBits39", "aw-bits=39", 0x10, 0x00D2_008C_2226_0206, 0x0000_0000_0000_0F42 },
        { "Qemu72AwBits48", "aw-bits=48", 0x10, 0x00D2_008C_222F_0606, 0x0000_0000_0000_0F42 },
        { "Qemu72ScalableAwBits39", "aw-bits=39,x-scalable-mode=on", 0x10, 0x00D2_008C_2226_0206, 0x0000_4800_8000_0F42 },
        { "Qemu72ScalableAwBits48", "aw-bits=48,x-scalable-mode=on", 0x10, 0x00D2_008C_222F_0606, 0x0000_4800_8000_0F42 },
    };

    private static VtdConfig Preset(string name) => name switch
    {
        "Legacy39Bit" => VtdConfig.Legacy39Bit,
        "Legacy48Bit" => VtdConfig.Legacy48Bit,
        "ScalableMode39Bit" => VtdConfig.ScalableMode39Bit,
        "ScalableMode48Bit" => VtdConfig.ScalableMode48Bit,
        "ScalableMode57Bit" => VtdConfig.ScalableMode57Bit,
        "Qemu72AwBits39" => VtdConfig.Qemu72AwBits39,
        "Qemu72AwBits48" => VtdConfig.Qemu72AwBits48,
        "Qemu72ScalableAwBits39" => VtdConfig.Qemu72ScalableAwBits39,
        "Qemu72ScalableAwBits48" => VtdConfig.Qemu72ScalableAwBits48,
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    [Fact]
    public void Legacy39Bit_matches_qemu_7_2_default_with_intremap_off()
    {
        using var b = new VtdBench(VtdConfig.Legacy39Bit);
        Assert.Equal(0x00D2_008C_2226_0206UL, b.Unit.Read64(0x08));
        Assert.Equal(0x0000_0000_0000_0F42UL, b.Unit.Read64(0x10));
        Assert.Equal(0x10u, b.Unit.Read32(0x00));
    }

    [Theory]
    [MemberData(nameof(QemuUnits))]
    public void Qemu_presets_read_back_the_registers_of_qemu_7_2(string preset, string qemuOptions, uint ver, ulong cap, ulong ecap)
    {
        using var b = new VtdBench(Preset(preset));
        Assert.True(ver == b.Unit.Read32(0x00), $"{preset} (intel-iommu,{qemuOptions}): VER 0x{b.Unit.Read32(0x00):x}, QEMU 0x{ver:x}");
        Assert.True(cap == b.Unit.Read64(0x08), $"{preset} (intel-iommu,{qemuOptions}): CAP 0x{b.Unit.Read64(0x08):x16}, QEMU 0x{cap:x16}");
        Assert.True(ecap == b.Unit.Read64(0x10), $"{preset} (intel-iommu,{qemuOptions}): ECAP 0x{b.Unit.Read64(0x10):x16}, QEMU 0x{ecap:x16}");
    }

    // The SVA preset is the first-level unit plus exactly DT, PRS and PDS, as software reads ECAP back.
    [Fact]
    public void ScalableModeSva48Bit_reads_back_the_first_level_unit_plus_dt_prs_and_pds()
    {
        using var sva = new VtdBench(VtdConfig.ScalableModeSva48Bit);
        using var fl = new VtdBench(VtdConfig.ScalableModeFirstLevel48Bit);
        const ulong Added = VtdEcap.Dt | VtdEcap.Prs | VtdEcap.Pds;
        Assert.Equal(0UL, fl.Unit.Read64(0x10) & Added);
        Assert.Equal(fl.Unit.Read64(0x10) | Added, sva.Unit.Read64(0x10));
        Assert.Equal(fl.Unit.Read64(0x08), sva.Unit.Read64(0x08));
        Assert.NotEqual(0UL, sva.Unit.Read64(0x10) & VtdEcap.Flts);
    }

    [Fact]
    public void Legacy48Bit_is_not_qemus_aw_bits_48_unit_but_legacy39Bit_is_its_aw_bits_39_unit()
    {
        Assert.NotEqual(VtdConfig.Qemu72AwBits48.Cap, VtdConfig.Legacy48Bit.Cap); // eight fault records, not one
        Assert.NotEqual(VtdConfig.Qemu72AwBits48.HostAddressWidth, VtdConfig.Legacy48Bit.HostAddressWidth);
        Assert.Equal(VtdConfig.Qemu72AwBits39, VtdConfig.Legacy39Bit);
    }

    [Fact]
    public void Legacy39Bit_with_caching_mode_matches_qemu()
    {
        using var b = new VtdBench(VtdConfig.Legacy39Bit with { CachingMode = true });
        Assert.Equal(0x00D2_008C_2226_0286UL, b.Cap);
    }

    [Theory]
    [MemberData(nameof(Presets))]
    public void Cap_fields_sit_at_spec_bit_positions(string name)
    {
        VtdConfig c = Preset(name);
        using var b = new VtdBench(c);
        ulong cap = b.Cap;
        Assert.Equal(6UL, cap & 7);                                        // ND 2:0
        Assert.Equal(c.CachingMode, (cap >> 7 & 1) == 1);                  // CM 7
        Assert.Equal(1UL, cap >> 9 & 1);                                  // SAGAW 39-bit
        Assert.Equal(c.Supports48BitTables, (cap >> 10 & 1) == 1);         // SAGAW 48-bit
        Assert.Equal(c.Supports57BitTables, (cap >> 11 & 1) == 1);         // SAGAW 57-bit
        Assert.Equal((ulong)c.MaxGuestAddressWidth - 1, cap >> 16 & 0x3F); // MGAW 21:16
        Assert.Equal(0x22UL, cap >> 24 & 0x3FF);                          // FRO 33:24
        Assert.Equal(3UL, cap >> 34 & 0xF);                               // SLLPS 2M|1G
        Assert.Equal(1UL, cap >> 39 & 1);                                 // PSI
        Assert.Equal((ulong)c.FaultRecordCount - 1, cap >> 40 & 0xFF);    // NFR 47:40
        Assert.Equal(18UL, cap >> 48 & 0x3F);                             // MAMV 53:48
        Assert.Equal(3UL, cap >> 54 & 3);                                 // DWD, DRD
        Assert.Equal(0UL, cap & 0x7800_0000_0000_E068);                   // reserved / unsupported features clear
    }

    [Theory]
    [MemberData(nameof(Presets))]
    public void Ecap_fields_sit_at_spec_bit_positions(string name)
    {
        VtdConfig c = Preset(name);
        using var b = new VtdBench(c);
        ulong ecap = b.Ecap;
        Assert.Equal(1UL, ecap >> 1 & 1);                                 // QI
        Assert.Equal(c.InterruptRemapping, (ecap >> 3 & 1) == 1);         // IR: reported, table not modelled
        Assert.Equal(1UL, ecap >> 6 & 1);                                 // PT
        Assert.Equal(0x0FUL, ecap >> 8 & 0x3FF);                          // IRO
        Assert.Equal(c.ScalableMode, (ecap >> 43 & 1) == 1);               // SMTS
        Assert.Equal(c.ScalableMode, (ecap >> 46 & 1) == 1);               // SLTS
        Assert.Equal(c.PasidSupport, (ecap >> 40 & 1) == 1);               // PASID
        Assert.Equal(c.PasidSupport ? 19UL : 0, ecap >> 35 & 0x1F);        // PSS
        Assert.Equal(c.RidPasidSupport, (ecap >> 49 & 1) == 1);            // RPS
        Assert.Equal(c.SupervisorRequests, (ecap >> 31 & 1) == 1);         // SRS
        Assert.Equal(0UL, ecap >> 47 & 1);                                // FLTS not modelled
    }

    [Fact]
    public void Options_toggle_their_bits()
    {
        VtdConfig c = VtdConfig.Legacy48Bit with
        {
            SnoopControl = true, PageWalkCoherency = true, RequiresWriteBufferFlush = true, SecondLevel1GiBPages = false,
            DomainIdEncoding = 2, SetRootTableInvalidatesCaches = true,
        };
        Assert.Equal(1UL << 7, c.Ecap & (1UL << 7));
        Assert.Equal(1UL, c.Ecap & 1);
        Assert.Equal(1UL << 4, c.Cap & (1UL << 4));
        Assert.Equal(1UL, c.Cap >> 34 & 0xF);
        Assert.Equal(2UL, c.Cap & 7);
        Assert.Equal(1UL << 63, c.Cap & (1UL << 63));
    }

    [Fact]
    public void Decoders_read_the_fields_back()
    {
        ulong cap = VtdConfig.ScalableMode57Bit.Cap;
        Assert.Equal(0x220u, VtdCap.FaultRecordingOffset(cap));
        Assert.Equal(8, VtdCap.FaultRecordCount(cap));
        Assert.Equal(57, VtdCap.Mgaw(cap));
        Assert.Equal(0b1110u, VtdCap.Sagaw(cap));
        Assert.Equal(65536UL, VtdCap.DomainCount(cap));
        Assert.Equal(0xF0u, VtdEcap.IotlbRegisterOffset(VtdConfig.ScalableMode57Bit.Ecap));
        Assert.Equal(20, VtdEcap.PasidWidth(VtdConfig.ScalableMode57Bit.Ecap));
    }

    [Fact]
    public void Invalid_configuration_is_rejected()
    {
        Assert.Throws<ArgumentException>(() => (VtdConfig.Legacy48Bit with { FaultRecordCount = 0 }).Validate());
        Assert.Throws<ArgumentException>(() => (VtdConfig.Legacy48Bit with { PasidSupport = true }).Validate());
        Assert.Throws<ArgumentException>(() => (VtdConfig.Legacy48Bit with { SupervisorRequests = true }).Validate());
        Assert.Throws<ArgumentException>(() => (VtdConfig.Legacy48Bit with { Supports39BitTables = false, Supports48BitTables = false }).Validate());
    }
}
