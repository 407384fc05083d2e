using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace Iommu.Devices;

/// <summary>
/// A PCI address <c>segment:bus:device.function</c> (e.g. <c>0000:00:02.0</c>), with the
/// requester ID the device puts on its DMA.
/// </summary>
public readonly record struct PciAddress : IParsable<PciAddress>, ISpanFormattable
{
    /// <summary>Creates an address from its parts.</summary>
    /// <param name="segment">PCI segment (domain), 0–0xffff.</param>
    /// <param name="bus">Bus number, 0–0xff.</param>
    /// <param name="device">Device (slot) number, 0–31.</param>
    /// <param name="function">Function number, 0–7.</param>
    public PciAddress(int segment, int bus, int device, int function)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(segment);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(segment, 0xffff);
        ArgumentOutOfRangeException.ThrowIfNegative(bus);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bus, 0xff);
        ArgumentOutOfRangeException.ThrowIfNegative(device);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(device, 31);
        ArgumentOutOfRangeException.ThrowIfNegative(function);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(function, 7);
        Segment = (ushort)segment;
        Bus = (byte)bus;
        DevFn = (byte)((device << 3) | function);
    }

    /// <summary>PCI segment (domain) number.</summary>
    public ushort Segment { get; }

    /// <summary>Bus number.</summary>
    public byte Bus { get; }

    /// <summary>Device and function packed as the kernel's <c>devfn</c> (<c>device &lt;&lt; 3 | function</c>).</summary>
    [KernelSymbol("pci_dev.devfn")]
    public byte DevFn { get; }

    /// <summary>Device (slot) number, <c>PCI_SLOT(devfn)</c>.</summary>
    [KernelSymbol("PCI_SLOT")]
    public int Device => DevFn >> 3;

    /// <summary>Function number, <c>PCI_FUNC(devfn)</c>.</summary>
    [KernelSymbol("PCI_FUNC")]
    public int Function => DevFn & 7;

    /// <summary>The 16-bit requester ID (source ID) the device tags its DMA with: <c>bus &lt;&lt; 8 | devfn</c>.</summary>
    [KernelSymbol("pci_dev_id")]
    public ushort RequesterId => (ushort)((Bus << 8) | DevFn);

    /// <summary>Creates an address from a requester ID on a segment.</summary>
    /// <param name="segment">Segment.</param>
    /// <param name="requesterId">Bus and devfn.</param>
    /// <returns>The address.</returns>
    public static PciAddress FromRequesterId(int segment, ushort requesterId) =>
        new(segment, requesterId >> 8, (requesterId >> 3) & 31, requesterId & 7);

    /// <summary>Parses <c>SSSS:BB:DD.F</c> or <c>BB:DD.F</c> (segment 0), hexadecimal like <c>lspci</c>.</summary>
    /// <param name="s">The text.</param>
    /// <param name="provider">Ignored.</param>
    /// <returns>The address.</returns>
    public static PciAddress Parse(string s, IFormatProvider? provider = null)
    {
        ArgumentNullException.ThrowIfNull(s);
        return TryParse(s, provider, out PciAddress a)
            ? a
            : throw new FormatException($"'{s}' is not a PCI address of the form SSSS:BB:DD.F (hexadecimal, device ≤ 1f, function ≤ 7).");
    }

    /// <summary>Tries to parse <c>SSSS:BB:DD.F</c> or <c>BB:DD.F</c>.</summary>
    /// <param name="s">The text.</param>
    /// <param name="provider">Ignored.</param>
    /// <param name="result">The address on success.</param>
    /// <returns>True on success.</returns>
    public static bool TryParse([NotNullWhen(true)] string? s, IFormatProvider? provider, out PciAddress result)
    {
        result = default;
        if (s is null)
        {
            return false;
        }

        string[] colon = s.Split(':');
        if (colon.Length is < 2 or > 3)
        {
            return false;
        }

        int segment = 0;
        if (colon.Length == 3 && !TryHex(colon[0], 4, out segment))
        {
            return false;
        }

        string busText = colon[^2];
        string[] dot = colon[^1].Split('.');
        if (dot.Length != 2
            || !TryHex(busText, 2, out int bus)
            || !TryHex(dot[0], 2, out int dev) || dev > 31
            || dot[1].Length != 1 || !TryHex(dot[1], 1, out int fn) || fn > 7)
        {
            return false;
        }

        result = new PciAddress(segment, bus, dev, fn);
        return true;
    }

    /// <summary>Formats as <c>ssss:bb:dd.f</c> (the kernel's <c>dev_name</c> of a PCI device).</summary>
    /// <returns>The text.</returns>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{Segment:x4}:{Bus:x2}:{Device:x2}.{Function:x1}");

    /// <inheritdoc/>
    public string ToString(string? format, IFormatProvider? formatProvider) => ToString();

    /// <inheritdoc/>
    public bool TryFormat(Span<char> destination, out int charsWritten, ReadOnlySpan<char> format, IFormatProvider? provider) =>
        destination.TryWrite(CultureInfo.InvariantCulture, $"{Segment:x4}:{Bus:x2}:{Device:x2}.{Function:x1}", out charsWritten);

    private static bool TryHex(string s, int maxDigits, out int value)
    {
        value = 0;
        return s.Length >= 1 && s.Length <= maxDigits
            && int.TryParse(s, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value);
    }
}
