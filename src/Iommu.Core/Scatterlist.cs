namespace Iommu;

/// <summary>
/// One entry of a scatterlist (<c>struct scatterlist</c>): a buffer the caller fills in
/// (<see cref="Phys"/>, <see cref="Length"/>), and the DMA segment <see cref="IommuCore.DmaMapSg"/> writes
/// (<see cref="DmaAddress"/>, <see cref="DmaLength"/>).
/// </summary>
/// <remarks>
/// As in the kernel a map may merge entries: it returns the number of DMA segments, held by the first entries
/// of the list; the others get <see cref="IommuCore.DmaMappingError"/> and length 0. The buffer fields are
/// never changed. Pass the whole list (all entries, not the returned count) to <see cref="IommuCore.DmaUnmapSg"/>.
/// </remarks>
[KernelSymbol("struct scatterlist")]
public struct Scatterlist
{
    /// <summary>Creates an entry for <paramref name="length"/> bytes at physical address <paramref name="phys"/>.</summary>
    /// <param name="phys">Physical address of the buffer (any alignment).</param>
    /// <param name="length">Bytes.</param>
    public Scatterlist(ulong phys, uint length)
    {
        Phys = phys;
        Length = length;
        DmaAddress = IommuCore.DmaMappingError;
    }

    /// <summary>Physical address of the buffer (<c>sg_phys</c>: the page's address plus <c>offset</c>).</summary>
    [KernelSymbol("sg_phys")]
    public ulong Phys { get; set; }

    /// <summary>Bytes of the buffer (<c>length</c>).</summary>
    [KernelSymbol("scatterlist.length")]
    public uint Length { get; set; }

    /// <summary>The DMA address of the DMA segment this entry holds after a map (<c>sg_dma_address</c>), or <see cref="IommuCore.DmaMappingError"/>.</summary>
    [KernelSymbol("sg_dma_address")]
    public ulong DmaAddress { readonly get; internal set; }

    /// <summary>Bytes of the DMA segment this entry holds after a map (<c>sg_dma_len</c>), or 0.</summary>
    [KernelSymbol("sg_dma_len")]
    public uint DmaLength { readonly get; internal set; }
}
