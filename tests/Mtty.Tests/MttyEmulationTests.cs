using System.Buffers.Binary;
using Iommu;
using Vfio.Mdev;

namespace Mtty.Tests;

public sealed class MttyEmulationTests
{
    private static MdevDeviceFile Open(MttyBed bed, string type)
    {
        MdevDevice m = bed.Create(type);
        Assert.Equal(Errno.None, m.Open(out MdevDeviceFile? f));
        return f!;
    }

    private static uint ReadConfig32(MdevDeviceFile f, int pos)
    {
        byte[] b = new byte[4];
        Assert.Equal(4, f.Read(b, VfioPci.Offset(VfioPci.Config, pos)));
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    private static void WriteConfig32(MdevDeviceFile f, int pos, uint value)
    {
        byte[] b = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        Assert.Equal(4, f.Write(b, VfioPci.Offset(VfioPci.Config, pos)));
    }

    [Fact]
    public void Config_space_identifies_a_serial_controller()
    {
        using var bed = new MttyBed(withPinning: false);
        using MdevDeviceFile f = Open(bed, "mtty-1");
        Assert.Equal(0x3253_4348u, ReadConfig32(f, 0));
        Assert.Equal(0x0700_0210u, ReadConfig32(f, 8));
        Assert.Equal(0x1u, ReadConfig32(f, 0x10));
        Assert.Equal(0x0u, ReadConfig32(f, 0x14)); // one port: no BAR1
    }

    [Fact]
    public void Bar_sizing_reports_an_8_byte_io_bar_and_vendor_id_is_read_only()
    {
        using var bed = new MttyBed(withPinning: false);
        using MdevDeviceFile f = Open(bed, "mtty-2");
        WriteConfig32(f, 0x10, 0xffff_ffff);
        WriteConfig32(f, 0x14, 0xffff_ffff);
        WriteConfig32(f, 0x18, 0xffff_ffff);
        WriteConfig32(f, 0x00, 0);
        Assert.Equal(0xffff_fff9u, ReadConfig32(f, 0x10));
        Assert.Equal(0xffff_fff9u, ReadConfig32(f, 0x14));
        Assert.Equal(0u, ReadConfig32(f, 0x18));
        Assert.Equal(0x3253_4348u, ReadConfig32(f, 0));
        WriteConfig32(f, 0x10, 0xc000);
        Assert.Equal(0xc001u, ReadConfig32(f, 0x10));
    }

    [Fact]
    public void Bytes_written_to_a_port_loop_back_into_its_receive_fifo()
    {
        using var bed = new MttyBed(withPinning: false);
        using MdevDeviceFile f = Open(bed, "mtty-2");
        byte[] lsr = new byte[1];
        f.Read(lsr, VfioPci.Offset(VfioPci.Bar1, 5));
        Assert.Equal(0x60, lsr[0]); // transmitter empty, no data

        foreach (byte c in "hi"u8.ToArray())
        {
            Assert.Equal(1, f.Write([c], VfioPci.Offset(VfioPci.Bar1, 0)));
        }

        f.Read(lsr, VfioPci.Offset(VfioPci.Bar1, 5));
        Assert.Equal(0x61, lsr[0]);
        byte[] rx = new byte[1];
        f.Read(rx, VfioPci.Offset(VfioPci.Bar1, 0));
        Assert.Equal((byte)'h', rx[0]);
        f.Read(rx, VfioPci.Offset(VfioPci.Bar1, 0));
        Assert.Equal((byte)'i', rx[0]);
        f.Read(lsr, VfioPci.Offset(VfioPci.Bar0, 5));
        Assert.Equal(0x60, lsr[0]); // port 0 saw nothing
    }

    [Fact]
    public void Scratch_and_divisor_latch_registers_hold_their_values()
    {
        using var bed = new MttyBed(withPinning: false);
        using MdevDeviceFile f = Open(bed, "mtty-1");
        f.Write([0x5a], VfioPci.Offset(VfioPci.Bar0, 7));
        f.Write([0x80], VfioPci.Offset(VfioPci.Bar0, 3)); // DLAB
        f.Write([0x01], VfioPci.Offset(VfioPci.Bar0, 0));
        byte[] b = new byte[8];
        Assert.Equal(8, f.Read(b, VfioPci.Offset(VfioPci.Bar0, 0)));
        Assert.Equal(0x01, b[0]);
        Assert.Equal(0x80, b[3]);
        Assert.Equal(0x5a, b[7]);
    }

    [Fact]
    public void Out_of_range_accesses_are_EINVAL()
    {
        using var bed = new MttyBed(withPinning: false);
        using MdevDeviceFile f = Open(bed, "mtty-1");
        long einval = Errno.EINVAL.ToKernelReturn();
        Assert.Equal(einval, f.Read(new byte[1], VfioPci.Offset(VfioPci.Bar1, 0)));
        Assert.Equal(einval, f.Read(new byte[2], VfioPci.Offset(VfioPci.Bar0, 7)));
        Assert.Equal(einval, f.Read(new byte[4], VfioPci.Offset(VfioPci.Config, 254)));
        Assert.Equal(einval, f.Write(new byte[1], VfioPci.Offset(3, 0)));
        Assert.Equal(Errno.EINVAL, f.Mmap(new VmArea(0, 4096, 0, false))); // mtty has no mmap
    }

    [Fact]
    public void Device_info_and_reset_ioctls()
    {
        using var bed = new MttyBed(withPinning: false);
        using MdevDeviceFile f = Open(bed, "mtty-1");
        byte[] info = new byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(info, 16);
        Assert.Equal(0, f.Ioctl(VfioPci.DeviceGetInfo, info));
        Assert.Equal(3u, BinaryPrimitives.ReadUInt32LittleEndian(info.AsSpan(4)));
        Assert.Equal(9u, BinaryPrimitives.ReadUInt32LittleEndian(info.AsSpan(8)));
        Assert.Equal(5u, BinaryPrimitives.ReadUInt32LittleEndian(info.AsSpan(12)));
        BinaryPrimitives.WriteUInt32LittleEndian(info, 15);
        Assert.Equal(Errno.EINVAL.ToKernelReturn(), f.Ioctl(VfioPci.DeviceGetInfo, info));
        Assert.Equal(Errno.ENOTTY.ToKernelReturn(), f.Ioctl(0x3b99, []));

        f.Write([0x42], VfioPci.Offset(VfioPci.Bar0, 0));
        Assert.Equal(0, f.Ioctl(VfioPci.DeviceReset, []));
        byte[] lsr = new byte[1];
        f.Read(lsr, VfioPci.Offset(VfioPci.Bar0, 5));
        Assert.Equal(0x60, lsr[0]);
    }
}
