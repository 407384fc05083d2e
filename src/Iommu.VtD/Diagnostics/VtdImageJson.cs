using System.Globalization;
using System.Text;
using System.Text.Json;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Diagnostics;

/// <summary>
/// Writes and reads <see cref="VtdImage"/>s in the JSON format of <c>docs/vtd-image-format.md</c>
/// (<c>"format": "iommu-vtd-image", "version": 1</c>). Addresses and register values are hex
/// strings ("0x…"), chunk bytes are base64.
/// </summary>
public static class VtdImageJson
{
    /// <summary>The value of the <c>format</c> member.</summary>
    public const string FormatName = "iommu-vtd-image";

    /// <summary>The format version this code writes and reads.</summary>
    public const int Version = 1;

    /// <summary>Serialises <paramref name="image"/>.</summary>
    /// <param name="image">The image.</param>
    /// <param name="indented">Pretty-print.</param>
    /// <returns>UTF-8 JSON text.</returns>
    public static string ToJson(this VtdImage image, bool indented = true)
    {
        ArgumentNullException.ThrowIfNull(image);
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = indented }))
        {
            w.WriteStartObject();
            w.WriteString("format", FormatName);
            w.WriteNumber("version", Version);
            w.WriteString("mode", image.Mode == VtdTranslationMode.Scalable ? "scalable" : "legacy");
            w.WriteString("rtaddr", Hex(image.RtAddr));
            w.WriteString("rootTable", Hex(image.RootTable));
            w.WriteNumber("hostAddressWidth", image.HostAddressWidth);
            w.WriteBoolean("translationEnabled", image.TranslationEnabled);
            w.WriteStartArray("chunks");
            foreach (VtdImageChunk c in image.Chunks)
            {
                w.WriteStartObject();
                w.WriteString("address", Hex(c.Address));
                w.WriteString("kind", KindName(c.Kind));
                w.WriteNumber("level", c.Level);
                w.WriteNumber("size", c.Size);
                w.WriteBase64String("data", c.Data.Span);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteStartArray("probes");
            foreach (VtdProbeResult p in image.Probes)
            {
                w.WriteStartObject();
                w.WriteString("requester", Hex(p.Probe.RequesterId, 4));
                w.WriteString("bdf", string.Create(CultureInfo.InvariantCulture, $"{p.Probe.RequesterId >> 8:x2}:{(p.Probe.RequesterId >> 3) & 0x1F:x2}.{p.Probe.RequesterId & 7:x}"));
                if (p.Probe.Pasid is uint pasid)
                {
                    w.WriteNumber("pasid", pasid);
                }
                else
                {
                    w.WriteNull("pasid");
                }

                w.WriteString("iova", Hex(p.Probe.Iova));
                w.WriteString("access", p.Probe.Access == DmaAccess.Write ? "write" : "read");
                w.WriteNumber("size", p.Probe.Size);
                w.WriteString("result", StatusName(p.Status));
                if (p.IsTranslated)
                {
                    w.WriteString("physicalAddress", Hex(p.PhysicalAddress));
                    w.WriteString("pageSize", Hex(p.PageSize));
                    w.WriteBoolean("writable", p.Writable);
                }

                if (p.IsFault)
                {
                    w.WriteString("faultReason", Hex((byte)p.Reason, 2));
                    w.WriteString("faultName", p.Reason.ToString());
                    w.WriteBoolean("faultRecorded", p.FaultRecorded);
                }

                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>Parses an image written by <see cref="ToJson"/> (unknown members are ignored).</summary>
    /// <param name="json">The JSON text.</param>
    /// <returns>The image.</returns>
    /// <exception cref="FormatException">Not a version-1 image, or a member is malformed (a probe that is not one request included).</exception>
    public static VtdImage FromJson(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        try
        {
            using JsonDocument doc = JsonDocument.Parse(json);
            JsonElement root = doc.RootElement;
            if (root.GetProperty("format").GetString() != FormatName || root.GetProperty("version").GetInt32() != Version)
            {
                throw new FormatException($"Not a version {Version} {FormatName} document.");
            }

            var chunks = new List<VtdImageChunk>();
            foreach (JsonElement c in root.GetProperty("chunks").EnumerateArray())
            {
                byte[] data = c.GetProperty("data").GetBytesFromBase64();
                if (c.TryGetProperty("size", out JsonElement size) && size.GetInt32() != data.Length)
                {
                    throw new FormatException("A chunk's size does not match its data.");
                }

                chunks.Add(new VtdImageChunk(ParseHex(c.GetProperty("address")), ParseKind(c.GetProperty("kind").GetString()), c.GetProperty("level").GetInt32(), data));
            }

            var probes = new List<VtdProbeResult>();
            if (root.TryGetProperty("probes", out JsonElement ps))
            {
                foreach (JsonElement p in ps.EnumerateArray())
                {
                    JsonElement pasidEl = p.GetProperty("pasid");
                    var probe = new VtdProbe(
                        (ushort)ParseHex(p.GetProperty("requester")),
                        pasidEl.ValueKind == JsonValueKind.Null ? null : pasidEl.GetUInt32(),
                        ParseHex(p.GetProperty("iova")),
                        p.GetProperty("access").GetString() == "write" ? DmaAccess.Write : DmaAccess.Read,
                        p.GetProperty("size").GetInt32());
                    VtdImage.CheckProbe(probe, "probes");
                    VtdTranslationStatus status = ParseStatus(p.GetProperty("result").GetString());
                    probes.Add(new VtdProbeResult(
                        probe,
                        status,
                        p.TryGetProperty("physicalAddress", out JsonElement pa) ? ParseHex(pa) : 0,
                        p.TryGetProperty("pageSize", out JsonElement sz) ? ParseHex(sz) : 0,
                        p.TryGetProperty("writable", out JsonElement wr) && wr.GetBoolean(),
                        p.TryGetProperty("faultReason", out JsonElement fr) ? (VtdFaultReason)ParseHex(fr) : VtdFaultReason.None,
                        p.TryGetProperty("faultRecorded", out JsonElement rec) && rec.GetBoolean()));
                }
            }

            return new VtdImage(
                ParseHex(root.GetProperty("rtaddr")),
                root.GetProperty("hostAddressWidth").GetInt32(),
                root.GetProperty("translationEnabled").GetBoolean(),
                chunks,
                probes);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or ArgumentException)
        {
            throw new FormatException("Malformed VT-d image: " + e.Message, e);
        }
    }

    /// <summary>The JSON name of a chunk kind.</summary>
    /// <param name="kind">The kind.</param>
    /// <returns>"root", "context-legacy", "context-scalable", "pasid-directory", "pasid-table", "page-table", "first-level-table" or "nested-first-level-table".</returns>
    public static string KindName(VtdImageChunkKind kind) => kind switch
    {
        VtdImageChunkKind.RootTable => "root",
        VtdImageChunkKind.LegacyContextTable => "context-legacy",
        VtdImageChunkKind.ScalableContextTable => "context-scalable",
        VtdImageChunkKind.PasidDirectory => "pasid-directory",
        VtdImageChunkKind.PasidTable => "pasid-table",
        VtdImageChunkKind.PageTable => "page-table",
        VtdImageChunkKind.FirstLevelTable => "first-level-table",
        VtdImageChunkKind.NestedFirstLevelTable => "nested-first-level-table",
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown chunk kind"),
    };

    private static VtdImageChunkKind ParseKind(string? s) => s switch
    {
        "root" => VtdImageChunkKind.RootTable,
        "context-legacy" => VtdImageChunkKind.LegacyContextTable,
        "context-scalable" => VtdImageChunkKind.ScalableContextTable,
        "pasid-directory" => VtdImageChunkKind.PasidDirectory,
        "pasid-table" => VtdImageChunkKind.PasidTable,
        "page-table" => VtdImageChunkKind.PageTable,
        "first-level-table" => VtdImageChunkKind.FirstLevelTable,
        "nested-first-level-table" => VtdImageChunkKind.NestedFirstLevelTable,
        _ => throw new FormatException($"Unknown chunk kind '{s}'."),
    };

    private static string StatusName(VtdTranslationStatus s) => s switch
    {
        VtdTranslationStatus.Translated => "translated",
        VtdTranslationStatus.Fault => "fault",
        VtdTranslationStatus.InterruptRange => "interrupt",
        _ => "memory-error",
    };

    private static VtdTranslationStatus ParseStatus(string? s) => s switch
    {
        "translated" => VtdTranslationStatus.Translated,
        "fault" => VtdTranslationStatus.Fault,
        "interrupt" => VtdTranslationStatus.InterruptRange,
        "memory-error" => VtdTranslationStatus.MemoryError,
        _ => throw new FormatException($"Unknown probe result '{s}'."),
    };

    private static string Hex(ulong v, int digits = 1) => "0x" + v.ToString("x" + digits.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);

    private static ulong ParseHex(JsonElement e)
    {
        string s = e.GetString() ?? throw new FormatException("Expected a hex string.");
        if (!s.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            || !ulong.TryParse(s.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong v))
        {
            throw new FormatException($"'{s}' is not a 0x-prefixed hex number.");
        }

        return v;
    }
}
