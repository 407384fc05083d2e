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

    // Found (seed 21, 200k inputs): UNMAP_DMA(VADDR) of [0x1000, 2^64) over a mapping already invalidated. The range
    // passes the wrap check (iova + size - 1 does not wrap), but 5.15's vfio_find_dma_first_node tests
    // dma->iova >= start + size with start + size == 0 and finds nothing: 0, nothing invalidated. The oracle expected
    // -EINVAL; the container (which follows 5.15) was right.
    [Fact]
    public void Unmap_vaddr_of_a_range_ending_at_2_pow_64_finds_nothing_even_over_an_invalidated_mapping()
    {
        using var bed = new FuzzBed(FuzzScenario.ContainerV2Full);
        Vfio.Type1.VfioDma first = bed.Container.Backend!.Mappings[0];
        byte[] invalidate = Unmap(VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR, first.Iova, first.Size);
        Assert.Equal(0, bed.Container.Ioctl(VfioUapi.VFIO_IOMMU_UNMAP_DMA, invalidate));
        Assert.True(bed.Container.Backend.Mappings[0].VaddrInvalid);

        byte[] arg = Unmap(VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR, first.Iova, 0UL - first.Iova);
        int[] fds = [bed.Container.Fd];
        FuzzExpectation expect = FuzzOracle.ContainerExpect(bed, FuzzState.Capture(bed, fds, first.Iova, 0UL - first.Iova), VfioUapi.VFIO_IOMMU_UNMAP_DMA, arg);

        Assert.Equal(0, bed.Container.Ioctl(VfioUapi.VFIO_IOMMU_UNMAP_DMA, arg));
        Assert.True(expect.Accepts(0), expect.ToString());
        Assert.Equal(0UL, BinaryPrimitives.ReadUInt64LittleEndian(arg.AsSpan(16))); // size written back: nothing unmapped
        Assert.All(bed.Container.Backend.Mappings.Skip(1), m => Assert.False(m.VaddrInvalid));
    }

    private static byte[] Unmap(uint flags, ulong iova, ulong size)
    {
        byte[] arg = new byte[24];
        BinaryPrimitives.WriteUInt32LittleEndian(arg, 24);
        BinaryPrimitives.WriteUInt32LittleEndian(arg.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt64LittleEndian(arg.AsSpan(8), iova);
        BinaryPrimitives.WriteUInt64LittleEndian(arg.AsSpan(16), size);
        return arg;
    }
}
