using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

public class RegisterTests
{
    [Fact]
    public void Reset_values()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        Assert.Equal(0u, b.Unit.Read32(0x1C));
        Assert.Equal(0x8000_0000u, b.Unit.Read32(0x38)); // FECTL.IM
        Assert.Equal(0x8000_0000u, b.Unit.Read32(0xA0)); // IECTL.IM
        Assert.Equal(0u, b.Fsts);
    }

    [Fact]
    public void Read_only_registers_ignore_writes()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        ulong cap = b.Cap;
        b.Unit.Write64(0x08, ~0UL);
        b.Unit.Write32(0x00, 0xFFFF_FFFF);
        b.Unit.Write32(0x1C, 0xFFFF_FFFF);
        b.Unit.Write64(0x80, 0x7FFF0);
        Assert.Equal(cap, b.Cap);
        Assert.Equal(0x10u, b.Unit.Read32(0x00));
        Assert.Equal(0u, b.Unit.Read32(0x1C));
        Assert.Equal(0UL, b.Unit.Read64(0x80));
    }

    [Fact]
    public void Rw_registers_keep_only_writable_bits()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        b.Unit.Write64(0x20, ulong.MaxValue);
        Assert.Equal(~0x3FFUL, b.Unit.Read64(0x20));
        b.Unit.Write32(0x3C, 0xFFFF_FFFF);
        Assert.Equal(0xFFFFu, b.Unit.Read32(0x3C));
        b.Unit.Write32(0x40, 0xFFFF_FFFF);
        Assert.Equal(0xFFFF_FFFCu, b.Unit.Read32(0x40));
        b.Unit.Write32(0x38, 0);
        Assert.Equal(0u, b.Unit.Read32(0x38));
    }

    [Fact]
    public void Gcmd_is_write_only_and_commands_show_in_gsts()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        b.Unit.Write64(0x20, b.RootTable);
        b.Gcmd(1u << 30);
        Assert.Equal(0u, b.Unit.Read32(0x18));
        Assert.Equal(1u << 30, b.Unit.Read32(0x1C)); // RTPS
        b.Gcmd(1u << 31);
        Assert.Equal(0xC000_0000u, b.Unit.Read32(0x1C));
        b.Gcmd(1u << 27); // WBF completes at once
        Assert.Equal(0u, b.Unit.Read32(0x1C) & (1u << 27));
        b.Gcmd(1u << 26);
        Assert.Equal(0xC400_0000u, b.Unit.Read32(0x1C));
        b.GcmdClear(1u << 31);
        Assert.Equal(0x4400_0000u, b.Unit.Read32(0x1C));
    }

    [Fact]
    public void Srtp_latches_rtaddr_so_later_rtaddr_writes_do_nothing_until_the_next_srtp()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        ulong sl = b.SetupLegacyDevice(0x0010, aw: 2, did: 1);
        b.Map(sl, 4, 0x1000, 0x20_0000);
        b.Enable(scalable: false);
        Assert.Equal(0x20_0000UL, b.Unit.Translate(0x10, null, 0x1000, 4, DmaAccess.Read).PhysicalAddress);

        // A second root table with a different mapping, only written to RTADDR.
        ulong root2 = b.AllocFrame();
        ulong ctx2 = b.AllocFrame();
        ulong sl2 = b.AllocFrame();
        b.Memory.WriteUInt64(root2, ctx2 | 1);
        b.LegacyContext(ctx2, 0x10, VtdBench.LegacyContextLow(sl2), VtdBench.LegacyContextHigh(2, 2));
        b.Map(sl2, 4, 0x1000, 0x30_0000);
        b.Unit.Write64(0x20, root2);
        b.GlobalContextInvalidate();
        b.GlobalIotlbInvalidate();
        Assert.Equal(0x20_0000UL, b.Unit.Translate(0x10, null, 0x1000, 4, DmaAccess.Read).PhysicalAddress);

        b.Gcmd(1u << 30);
        b.GlobalContextInvalidate();
        b.GlobalIotlbInvalidate();
        Assert.Equal(0x30_0000UL, b.Unit.Translate(0x10, null, 0x1000, 4, DmaAccess.Read).PhysicalAddress);
    }

    [Fact]
    public void Ccmd_completes_and_reports_actual_granularity()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        b.Unit.Write64(0x28, (1UL << 63) | (1UL << 61));
        Assert.Equal(1UL << 59, b.Unit.Read64(0x28) & (3UL << 59 | 1UL << 63));
        b.Unit.Write64(0x28, (1UL << 63) | (2UL << 61) | 5);
        Assert.Equal(2UL << 59, b.Unit.Read64(0x28) & (3UL << 59 | 1UL << 63));
        b.Unit.Write64(0x28, (1UL << 63) | (3UL << 61) | (0x10UL << 16) | 5);
        Assert.Equal(3UL << 59, b.Unit.Read64(0x28) & (3UL << 59 | 1UL << 63));
        // A 32-bit write to the upper half starts it too.
        b.Unit.Write32(0x2C, 0x8000_0000 | (1u << 29));
        Assert.Equal(1UL << 59, b.Unit.Read64(0x28) & (3UL << 59 | 1UL << 63));
    }

    [Fact]
    public void Iotlb_register_completes_and_reports_actual_granularity()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        uint iotlb = b.IotlbRegBase + 8;
        b.Unit.Write64(iotlb, (1UL << 63) | (3UL << 60) | (7UL << 32));
        Assert.Equal(3UL << 57, b.Unit.Read64(iotlb) & (3UL << 57 | 1UL << 63));
        b.Unit.Write64(b.IotlbRegBase, 0x1000 | 19); // AM 19 > MAMV 18
        b.Unit.Write64(iotlb, (1UL << 63) | (3UL << 60) | (7UL << 32));
        Assert.Equal(0UL, b.Unit.Read64(iotlb) & (3UL << 57 | 1UL << 63));
        Assert.Equal(0UL, b.Unit.Read64(b.IotlbRegBase)); // IVA is write-only
    }

    [Fact]
    public void Fsts_rw1c_bits_clear_only_when_written_with_one()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        b.EnableQueue(wide: false);
        b.Submit(0); // type 0: invalid → IQE
        Assert.Equal(1u << 4, b.Fsts & (1u << 4));
        b.Unit.Write32(0x34, 0);
        Assert.Equal(1u << 4, b.Fsts & (1u << 4));
        b.Memory.WriteUInt64(b.Unit.Read64(0x90) & ~0xFFFUL, 5 | (1UL << 6)); // fixed: clearing IQE fetches it again
        b.Unit.Write32(0x34, 1u << 4);
        Assert.Equal(0u, b.Fsts & (1u << 4));
    }

    [Fact]
    public void Misaligned_odd_sized_or_out_of_block_accesses_are_ignored_and_counted()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        b.Unit.Write64(0x20, 0x1234_5000); // RTADDR: the ignored accesses below must not change it
        ulong rtaddr = b.Unit.Read64(0x20);
        Assert.Equal(0UL, b.Unit.Read64(0x24));                    // misaligned quadword
        Assert.Equal(0u, b.Unit.Read32(0x22));                     // misaligned doubleword
        Assert.Equal(0UL, b.Unit.MmioRead(0x20, 2));               // a word
        b.Unit.MmioWrite(0x20, 1, 0xFF);                           // a byte: ignored
        b.Unit.Write64(0x24, ulong.MaxValue);                      // misaligned: ignored
        b.Unit.Write32(b.Unit.RegisterBlockSize, 0);               // past the block
        Assert.Equal(0UL, b.Unit.MmioRead(ulong.MaxValue - 3, 4)); // wraps: past the block
        Assert.Equal(rtaddr, b.Unit.Read64(0x20));
        Assert.Equal(7, b.Unit.IgnoredRegisterAccesses);
        Assert.Equal(0u, b.Unit.Read32(0x300));                    // unimplemented register reads 0, not ignored
        Assert.Equal(7, b.Unit.IgnoredRegisterAccesses);
    }

    [Fact]
    public void Register_halves_read_as_32_bit()
    {
        using var b = new VtdBench(VtdConfig.Legacy39Bit);
        Assert.Equal(0x2226_0206u, b.Unit.Read32(0x08));
        Assert.Equal(0x00D2_008Cu, b.Unit.Read32(0x0C));
    }
}
