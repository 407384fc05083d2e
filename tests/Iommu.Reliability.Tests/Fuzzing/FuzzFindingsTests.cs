using System.Buffers.Binary;
using Iommu.Reliability.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Iommu.Reliability.Tests.Fuzzing;

/// <summary>Regression tests for what the ioctl fuzzer found, each reduced to its input.</summary>
public sealed class FuzzFindingsTests
{
    // Found: GET_INFO with argsz >= 20 and a 16..19-byte buffer threw ArgumentOutOfRangeException while
    // writing cap_offset; the kernel's copy_to_user of the 20-byte header faults: -EFAULT, nothing written.
    [Theory]
    [InlineData(16, 24u)]
    [InlineData(17, 0x24u)]
    [InlineData(19, 20u)]
    public void Get_info_with_a_buffer_shorter_than_the_header_copy_is_efault(int length, uint argsz)
    {
        using var bed = new FuzzBed(FuzzScenario.ContainerV2);
        byte[] arg = new byte[length];
        BinaryPrimitives.WriteUInt32LittleEndian(arg, argsz);
        byte[] before = (byte[])arg.Clone();

        Assert.Equal(-(int)Errno.EFAULT, bed.Container.Ioctl(VfioUapi.VFIO_IOMMU_GET_INFO, arg));
        Assert.Equal(before, arg);
        bed.Container.Backend!.Audit();
    }

    [Fact]
    public void Get_info_with_argsz_below_20_and_a_16_byte_buffer_still_succeeds()
    {
        using var bed = new FuzzBed(FuzzScenario.ContainerV2);
        byte[] arg = new byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(arg, 16);

        Assert.Equal(0, bed.Container.Ioctl(VfioUapi.VFIO_IOMMU_GET_INFO, arg));
        Assert.True(BinaryPrimitives.ReadUInt32LittleEndian(arg) > 16); // the size the caller needs
    }

    // Found: GROUP_GET_STATUS with a 4..7-byte buffer returned -EINVAL; the kernel copies minsz = 8 bytes
    // before looking at argsz, so a short buffer is -EFAULT whatever its argsz.
    [Theory]
    [InlineData(4, 8u)]
    [InlineData(7, 8u)]
    [InlineData(5, 2u)]
    public void Group_get_status_with_a_buffer_shorter_than_8_bytes_is_efault(int length, uint argsz)
    {
        using var bed = new FuzzBed(FuzzScenario.GroupNoContainer);
        byte[] arg = new byte[length];
        BinaryPrimitives.WriteUInt32LittleEndian(arg, argsz);

        Assert.Equal(-(int)Errno.EFAULT, bed.GroupA.Ioctl(VfioUapi.VFIO_GROUP_GET_STATUS, arg));
        Assert.Equal(argsz, BinaryPrimitives.ReadUInt32LittleEndian(arg));
    }

    [Fact]
    public void Group_get_status_with_8_bytes_and_small_argsz_is_still_einval()
    {
        using var bed = new FuzzBed(FuzzScenario.GroupNoContainer);
        byte[] arg = [4, 0, 0, 0, 0, 0, 0, 0];

        Assert.Equal(-(int)Errno.EINVAL, bed.GroupA.Ioctl(VfioUapi.VFIO_GROUP_GET_STATUS, arg));
    }
}
