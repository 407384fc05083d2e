using System.Globalization;
using System.Text;
using System.Text.Json;

namespace AuxDomainTour;

/// <summary>
/// What the tour found: numbered sections of notes, tables and checks, plus named facts; rendered
/// as text or JSON.
/// </summary>
internal sealed class Report(string mode)
{
    private readonly List<Section> _sections = [];
    private readonly SortedDictionary<string, object?> _facts = new(StringComparer.Ordinal);

    /// <summary>Widest line the text report prints (what a projector shows unwrapped).</summary>
    public const int MaxWidth = 100;

    public string Mode { get; } = mode;

    public int Failures { get; private set; }

    public int Checks { get; private set; }

    private Section Current =>
        _sections.Count > 0 ? _sections[^1] : throw new InvalidOperationException("no section");

    public void Section(string title) => _sections.Add(new Section(_sections.Count + 1, title));

    public void Note(string text) => Current.Items.Add(new NoteItem(text));

    public bool Expect(bool ok, string what)
    {
        Current.Items.Add(new CheckItem(ok, what));
        Checks++;
        Failures += ok ? 0 : 1;
        return ok;
    }

    public Table Table(string name, params string[] columns)
    {
        var t = new Table(name, columns);
        Current.Items.Add(t);
        return t;
    }

    /// <summary>
    /// A machine-readable value (JSON "facts"): numbers, strings, booleans, lists.
    /// </summary>
    public void Fact(string key, object? value) => _facts[key] = value;

    /// <summary>The narrated report, every line within <see cref="MaxWidth"/> columns.</summary>
    /// <param name="only">A section number to print alone, or null for all.</param>
    public string ToText(int? only = null)
    {
        var sb = new StringBuilder();
        sb.AppendLine(Inv($"AuxDomainTour — IOMMU-aware mediated devices on VT-d ({Mode} mode)"));
        sb.AppendLine("Terms (DRHD, AGAW, PASID, ADI, RID_PASID, PGTT, …): see docs/concepts.md");
        int checks = 0, failures = 0;
        foreach (Section s in _sections.Where(s => only is null || s.Number == only))
        {
            sb.AppendLine();
            Wrap(sb, Inv($"== {s.Number}. {s.Title}"), "", "   ");
            foreach (object item in s.Items)
            {
                switch (item)
                {
                    case NoteItem n:
                        Wrap(sb, n.Text, "  ", "    ");
                        break;
                    case CheckItem c:
                        Wrap(sb, c.Text, c.Ok ? "  [ok] " : "  [UNEXPECTED] ", "       ");
                        checks++;
                        failures += c.Ok ? 0 : 1;
                        break;
                    case Table t:
                        t.Render(sb);
                        break;
                }
            }
        }

        string of = only is null ? "" : Inv($" of section {only}");
        sb.AppendLine();
        sb.AppendLine(failures == 0
            ? Inv($"All {checks} checks{of} behaved as the kernel does.")
            : Inv($"{failures} of {checks} checks{of} did not behave as expected."));

        // One section printed, but the run (and its exit code) covers all: name failures elsewhere.
        foreach (Section s in _sections.Where(s => only is not null && s.Number != only))
        {
            foreach (CheckItem c in s.Items.OfType<CheckItem>())
            {
                if (c.Ok)
                {
                    continue;
                }

                Wrap(sb, Inv($"section {s.Number}: {c.Text}"), "  [UNEXPECTED] ", "       ");
            }
        }

        return sb.ToString();
    }

    /// <summary>The number of sections the run produced.</summary>
    public int SectionCount => _sections.Count;

    /// <summary>
    /// Appends <paramref name="text"/>, wrapped at spaces to <see cref="MaxWidth"/>.
    /// </summary>
    internal static void Wrap(StringBuilder sb, string text, string first, string rest)
    {
        string prefix = first;
        var line = new StringBuilder(prefix);
        bool empty = true;
        foreach (string word in text.Split(' '))
        {
            if (!empty && line.Length + 1 + word.Length > MaxWidth)
            {
                sb.AppendLine(line.ToString());
                line.Clear().Append(rest);
                empty = true;
            }

            line.Append(empty ? "" : " ").Append(word);
            empty = false;
        }

        sb.AppendLine(line.ToString());
    }

    private static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    public string ToJson(int? only = null)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("tour", "AuxDomainTour");
            w.WriteString("mode", Mode);
            w.WriteBoolean("ok", Failures == 0);
            w.WriteNumber("checks", Checks);
            w.WriteNumber("failures", Failures);
            w.WriteStartObject("facts");
            foreach ((string k, object? v) in _facts)
            {
                w.WritePropertyName(k);
                WriteValue(w, v);
            }

            w.WriteEndObject();
            w.WriteStartArray("sections");
            foreach (Section s in _sections.Where(s => only is null || s.Number == only))
            {
                w.WriteStartObject();
                w.WriteNumber("number", s.Number);
                w.WriteString("title", s.Title);
                w.WriteStartArray("notes");
                foreach (NoteItem n in s.Items.OfType<NoteItem>())
                {
                    w.WriteStringValue(n.Text);
                }

                w.WriteEndArray();
                w.WriteStartArray("checks");
                foreach (CheckItem c in s.Items.OfType<CheckItem>())
                {
                    w.WriteStartObject();
                    w.WriteBoolean("ok", c.Ok);
                    w.WriteString("text", c.Text);
                    w.WriteEndObject();
                }

                w.WriteEndArray();
                w.WriteStartObject("tables");
                foreach (Table t in s.Items.OfType<Table>())
                {
                    w.WriteStartArray(t.Name);
                    foreach (string[] row in t.Rows)
                    {
                        w.WriteStartObject();
                        for (int i = 0; i < t.Columns.Length; i++)
                        {
                            w.WriteString(t.Columns[i], row[i]);
                        }

                        w.WriteEndObject();
                    }

                    w.WriteEndArray();
                }

                w.WriteEndObject();
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(stream.ToArray()) + Environment.NewLine;
    }

    private static void WriteValue(Utf8JsonWriter w, object? v)
    {
        switch (v)
        {
            case null:
                w.WriteNullValue();
                break;
            case bool b:
                w.WriteBooleanValue(b);
                break;
            case string s:
                w.WriteStringValue(s);
                break;
            case int i:
                w.WriteNumberValue(i);
                break;
            case long l:
                w.WriteNumberValue(l);
                break;
            case uint u:
                w.WriteNumberValue(u);
                break;
            case ulong ul:
                w.WriteNumberValue(ul);
                break;
            case System.Collections.IEnumerable list:
                w.WriteStartArray();
                foreach (object? o in list)
                {
                    WriteValue(w, o);
                }

                w.WriteEndArray();
                break;
            default:
                w.WriteStringValue(Convert.ToString(v, CultureInfo.InvariantCulture));
                break;
        }
    }

    private sealed record NoteItem(string Text);

    private sealed record CheckItem(bool Ok, string Text);
}

internal sealed class Section(int number, string title)
{
    public int Number { get; } = number;

    public string Title { get; } = title;

    public List<object> Items { get; } = [];
}

/// <summary>A table: a JSON array of objects keyed by column, or aligned text columns.</summary>
internal sealed class Table(string name, string[] columns)
{
    public string Name { get; } = name;

    public string[] Columns { get; } = columns;

    public List<string[]> Rows { get; } = [];

    public void Row(params object?[] cells)
    {
        if (cells.Length != Columns.Length)
        {
            throw new ArgumentException(
                $"table {Name}: {cells.Length} cells for {Columns.Length} columns");
        }

        Rows.Add([.. cells.Select(c => Convert.ToString(c, CultureInfo.InvariantCulture) ?? "")]);
    }

    public void Render(StringBuilder sb)
    {
        int[] width = [.. Columns.Select((c, i) => Rows.Select(r => r[i].Length)
            .Append(c.Length).Max())];

        // Too wide for the screen: the last column (a description) goes under each row.
        int full = 2 + width.Sum() + (2 * (width.Length - 1));
        bool under = full > Report.MaxWidth && Columns.Length > 1;
        int shown = under ? Columns.Length - 1 : Columns.Length;
        string Line(string[] cells) => "  " + string.Join("  ", cells.Take(shown)
            .Select((c, i) => i == shown - 1 ? c : c.PadRight(width[i]))).TrimEnd();
        sb.AppendLine(Line(Columns));
        sb.AppendLine(Line([.. width.Select(w => new string('-', w))]));
        if (shown < Columns.Length)
        {
            Report.Wrap(sb, $"({Columns[^1]} under each row)", "      ", "      ");
        }

        foreach (string[] r in Rows)
        {
            sb.AppendLine(Line(r));
            if (shown < Columns.Length)
            {
                Report.Wrap(sb, r[^1], "      ", "        ");
            }
        }
    }
}
