namespace Iommu;

/// <summary>Byte-size constants, so that configuration reads <c>64 * Sizes.GiB</c>.</summary>
public static class Sizes
{
    /// <summary>4 KiB, the x86 page size (<c>PAGE_SIZE</c>, <c>SZ_4K</c>).</summary>
    public const ulong Page = 4096;

    /// <summary>2^10 bytes.</summary>
    public const ulong KiB = 1UL << 10;

    /// <summary>2^20 bytes.</summary>
    public const ulong MiB = 1UL << 20;

    /// <summary>2^30 bytes.</summary>
    public const ulong GiB = 1UL << 30;

    /// <summary>2^40 bytes.</summary>
    public const ulong TiB = 1UL << 40;
}
